//! `ldap_read` (see `examples/ldap_read/main.rs`) with mimalloc as the global allocator: the
//! benchmark runs both to show what the allocator changes for a 100,000-entry read.

#[path = "../common/ldap_read.rs"]
mod common;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    common::main()
}
