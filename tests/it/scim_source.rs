//! Integration tests: scim_source (to be written).
