//! The `ironbridge` command line: subcommands, their output and exit codes.

/// Entry point of the `ironbridge` binary.
pub fn main() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
