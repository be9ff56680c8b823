//! Shared test plumbing: free ports, paths of the built binaries and of the test virtualenv.
//! Each real server's start-up lives in its own submodule.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;

/// A free TCP port on 127.0.0.1 (bound then released; good enough for a test run).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Path of a binary of this package, built by cargo for the integration tests.
pub fn bin(name: &str) -> PathBuf {
    match name {
        "ironbridge" => PathBuf::from(env!("CARGO_BIN_EXE_ironbridge")),
        "ironclad-sim" => PathBuf::from(env!("CARGO_BIN_EXE_ironclad-sim")),
        other => panic!("unknown binary {other}"),
    }
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python interpreter of the test virtualenv that `scripts/test.sh` prepares (scim2-server,
/// scim2-tester). `IRONBRIDGE_TEST_VENV` overrides its location.
pub fn python() -> PathBuf {
    let venv = std::env::var_os("IRONBRIDGE_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/test-venv"));
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/test.sh, which prepares the test virtualenv",
        py.display()
    );
    py
}

pub mod samba;
pub mod scim_server;
pub mod sim;
pub mod slapd;
