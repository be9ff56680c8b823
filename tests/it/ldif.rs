//! Integration tests: ldif (to be written).
