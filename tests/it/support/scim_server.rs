//! Test support: scim_server (to be written).
