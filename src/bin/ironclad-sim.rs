//! The `ironclad-sim` binary: parses the command line and hands over to [`ironbridge::sim`].
//! No logic lives here, only the choice of allocator: mimalloc, as in `ironbridge`. Each page
//! of 1,000 users is rendered as JSON trees and text and freed again; under the system
//! allocator a simulator holding 100,000 users served the same pages several times slower
//! from one start to the next, which made it a poor yardstick for the client's benchmarks
//! (docs/BENCHMARKS.md).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ironbridge::sim::cli_main()
}
