//! Integration tests: client (to be written).
