//! Integration tests: mapping (to be written).
