//! The one integration-test binary. Every server it talks to is real and listens on 127.0.0.1
//! on a free port: `ironclad-sim`, a private `slapd`, `scim2-server` from PyPI, Samba AD DC.
//! `scripts/test.sh` installs what these need; each module says what it covers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod cli;
mod client;
mod ldap;
mod ldif;
mod mapping;
mod reconcile;
mod report;
mod samba;
mod scim_source;
mod serve;
mod sim;
mod support;
