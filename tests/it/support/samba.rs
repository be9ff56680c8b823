//! Test support: samba (to be written).
