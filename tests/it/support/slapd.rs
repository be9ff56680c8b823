//! Test support: slapd (to be written).
