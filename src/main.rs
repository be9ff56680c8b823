//! The `ironbridge` binary: parses the command line and hands over to [`ironbridge::cli`].
//! No logic lives here, only the choice of allocator and how it returns memory. mimalloc,
//! because a large run makes and frees millions of small strings and JSON nodes, where the
//! system allocator spent as much time as the work itself (docs/BENCHMARKS.md). Built without
//! transparent huge pages (`no_thp`): the kernel zeroes each 2 MiB page on first touch, and a
//! run that builds a snapshot of 100,000 people spent more time in that zeroing than in
//! decoding them.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The mimalloc option that sets how long freed memory is kept before it is returned to the
/// system (one second by default). It is read from the environment when the process starts.
const PURGE_DELAY: &str = "MIMALLOC_PURGE_DELAY";

/// Memory freed during a run (the directory's attributes, once each person is mapped) is
/// returned to the system at once rather than a second later: at 100,000 people this lowers the
/// peak by about 20 MiB (docs/BENCHMARKS.md), and `serve` holds less between runs. The option
/// can only be given through the environment before the allocator starts, so unless the caller
/// set it, the binary starts itself again with it set (same process id, arguments, standard
/// streams). If that fails, the run goes on as it is.
#[cfg(unix)]
fn return_freed_memory_promptly() {
    use std::os::unix::process::CommandExt as _;
    if std::env::var_os(PURGE_DELAY).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut cmd = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        cmd.arg0(arg0);
    }
    cmd.args(args).env(PURGE_DELAY, "0");
    // `exec` returns only when it failed.
    let _failed = cmd.exec();
}

fn main() -> std::process::ExitCode {
    #[cfg(unix)]
    return_freed_memory_promptly();
    ironbridge::cli::main()
}
