//! Integration tests: ldap (to be written).
