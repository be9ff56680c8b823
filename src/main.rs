//! The `ironbridge` binary: parses the command line and hands over to [`ironbridge::cli`].
//! No logic lives here.

fn main() -> std::process::ExitCode {
    ironbridge::cli::main()
}
