//! The `ironbridge` binary: parses the command line and hands over to [`ironbridge::cli`].
//! No logic lives here, only the choice of allocator: mimalloc, because a large run makes and
//! frees millions of small strings and JSON nodes, where the system allocator spent as much
//! time as the work itself (docs/BENCHMARKS.md). Built without transparent huge pages
//! (`no_thp`): the kernel zeroes each 2 MiB page on first touch, and a run that builds a
//! snapshot of 100,000 people spent more time in that zeroing than in decoding them.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ironbridge::cli::main()
}
