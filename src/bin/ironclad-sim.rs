//! The `ironclad-sim` binary: parses the command line and hands over to [`ironbridge::sim`].
//! No logic lives here.

fn main() -> std::process::ExitCode {
    ironbridge::sim::cli_main()
}
