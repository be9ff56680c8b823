//! Integration tests: sim (to be written).
