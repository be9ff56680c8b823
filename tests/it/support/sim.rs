//! Test support: sim (to be written).
