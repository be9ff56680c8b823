//! Reads one snapshot from the `[source]` (kind = "ldap") of a configuration file and writes it
//! to stdout as JSON: what `bench/ldap-read.sh` times until `ironbridge source dump` exists,
//! and a quick way to see what the LDAP source makes of a directory.
//!
//! Usage: `cargo run --release --example ldap_read -- CONFIG.toml > snapshot.json`
//! (other tables of the file are ignored; relative paths are resolved against its directory).

#[path = "../common/ldap_read.rs"]
mod common;

fn main() -> std::process::ExitCode {
    common::main()
}
