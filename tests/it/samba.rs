//! Integration tests: samba (to be written).
