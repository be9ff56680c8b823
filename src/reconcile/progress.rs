//! Progress of a run, for people watching it: the read steps (source, Ironclad) and each apply
//! phase's writes done out of its total. An [`Observer`] receives the events; the engine and
//! apply find the current one with [`current`], which the caller installs around a run with
//! [`scope`] (a tokio task-local, so concurrent runs in one process keep their own).
//!
//! Two observers: [`TerminalProgress`] draws bars (indicatif) on standard error when it is a
//! terminal; [`LogProgress`], the default, writes structured `tracing` lines instead: one when a
//! phase starts, then at most every few seconds or every tenth of the phase, and one when it
//! ends. [`LogWriter`] is a `tracing` writer that lifts the bar out of the way while a log line
//! is printed, so logs and bars do not garble each other.
//!
//! What does not live here: the planner (pure, it reports nothing) and the writes themselves.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::future::Future;
use std::io::{IsTerminal as _, Write as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Receives progress events. Implementations must be cheap: they run on the apply path.
pub trait Observer: Send + Sync {
    /// A read step begins (`the source`, `Ironclad`, `planning`).
    fn reading(&self, what: &str);
    /// A read step ended with `count` objects.
    fn read(&self, what: &str, count: usize);
    /// An apply phase begins with `total` writes.
    fn phase_start(&self, phase: &str, total: usize);
    /// One write of the phase ended (`ok` false: it failed or was refused).
    fn write_done(&self, phase: &str, ok: bool);
    /// The phase ended.
    fn phase_end(&self, phase: &str);
    /// The run is over: remove anything still drawn.
    fn finish(&self) {}
}

tokio::task_local! {
    static OBSERVER: Arc<dyn Observer>;
}

/// Runs `fut` with `observer` as the [`current`] observer.
pub async fn scope<F: Future>(observer: Arc<dyn Observer>, fut: F) -> F::Output {
    OBSERVER.scope(observer, fut).await
}

/// The observer installed by [`scope`], else a [`LogProgress`].
pub fn current() -> Arc<dyn Observer> {
    OBSERVER
        .try_with(Arc::clone)
        .unwrap_or_else(|_| Arc::new(LogProgress::default()))
}

/// The observer for a command-line run: bars when standard error is a terminal and debug logs
/// are off (they would scroll the bars away), structured log lines otherwise.
pub fn for_cli() -> Arc<dyn Observer> {
    let debug = tracing::enabled!(target: "ironbridge", tracing::Level::DEBUG);
    if std::io::stderr().is_terminal() && !debug {
        Arc::new(TerminalProgress::new())
    } else {
        Arc::new(LogProgress::default())
    }
}

#[derive(Debug, Clone, Copy)]
struct PhaseState {
    total: usize,
    done: usize,
    failed: usize,
    started: Instant,
    last_line: Instant,
    last_done: usize,
}

/// One structured progress line, as [`LogProgress`] decides to write it.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Apply phase.
    pub phase: String,
    /// Writes done so far (failed included).
    pub done: usize,
    /// Writes planned in the phase.
    pub total: usize,
    /// Writes that failed so far.
    pub failed: usize,
    /// Writes per second since the phase started.
    pub rate: f64,
    /// Whether this is the phase's last line.
    pub end: bool,
}

/// Progress as structured `tracing` lines (`info`, message `apply progress`): a line per phase
/// start and end, and in between at most every `interval` or every tenth of the phase
/// (whichever comes first, never more often than every 100 writes unless the interval passed).
pub struct LogProgress {
    interval: Duration,
    phases: Mutex<HashMap<String, PhaseState>>,
}

impl Default for LogProgress {
    fn default() -> Self {
        LogProgress::new(Duration::from_secs(5))
    }
}

impl LogProgress {
    /// A logger writing at most every `interval` (plus the tenth-of-the-phase lines).
    pub fn new(interval: Duration) -> Self {
        LogProgress {
            interval,
            phases: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PhaseState>> {
        match self.phases.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Records a phase start at `now`.
    pub fn start_at(&self, phase: &str, total: usize, now: Instant) {
        self.lock().insert(
            phase.to_string(),
            PhaseState {
                total,
                done: 0,
                failed: 0,
                started: now,
                last_line: now,
                last_done: 0,
            },
        );
    }

    /// Records one write at `now`; returns the line to write, if one is due.
    pub fn tick_at(&self, phase: &str, ok: bool, now: Instant) -> Option<Line> {
        let mut phases = self.lock();
        let st = phases.get_mut(phase)?;
        st.done += 1;
        if !ok {
            st.failed += 1;
        }
        let step = (st.total / 10).max(100);
        let due = now.duration_since(st.last_line) >= self.interval
            || st.done - st.last_done >= step
            || st.done == st.total;
        if !due {
            return None;
        }
        st.last_line = now;
        st.last_done = st.done;
        Some(Self::line(phase, st, now, st.done >= st.total))
    }

    /// Ends a phase at `now`; returns its last line unless the last write already gave it.
    pub fn end_at(&self, phase: &str, now: Instant) -> Option<Line> {
        let st = self.lock().remove(phase)?;
        (st.last_done != st.done || st.done == 0).then(|| Self::line(phase, &st, now, true))
    }

    fn line(phase: &str, st: &PhaseState, now: Instant, end: bool) -> Line {
        let secs = now.duration_since(st.started).as_secs_f64();
        Line {
            phase: phase.to_string(),
            done: st.done,
            total: st.total,
            failed: st.failed,
            rate: if secs > 0.0 {
                (st.done as f64 / secs * 10.0).round() / 10.0
            } else {
                0.0
            },
            end,
        }
    }

    fn emit(line: &Line) {
        tracing::info!(
            phase = %line.phase,
            done = line.done,
            total = line.total,
            failed = line.failed,
            per_second = line.rate,
            end = line.end,
            "apply progress"
        );
    }
}

impl Observer for LogProgress {
    fn reading(&self, what: &str) {
        tracing::info!(step = %what, "reading");
    }
    fn read(&self, what: &str, count: usize) {
        tracing::info!(step = %what, count, "read");
    }
    fn phase_start(&self, phase: &str, total: usize) {
        self.start_at(phase, total, Instant::now());
        tracing::info!(phase = %phase, done = 0, total, "apply progress");
    }
    fn write_done(&self, phase: &str, ok: bool) {
        if let Some(l) = self.tick_at(phase, ok, Instant::now()) {
            Self::emit(&l);
        }
    }
    fn phase_end(&self, phase: &str) {
        if let Some(l) = self.end_at(phase, Instant::now()) {
            Self::emit(&l);
        }
    }
}

/// The bar currently drawn, so [`LogWriter`] can lift it while a log line is printed.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn active() -> std::sync::MutexGuard<'static, Option<ProgressBar>> {
    match ACTIVE.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Bars on standard error: a spinner for each read step, a bar per apply phase.
pub struct TerminalProgress {
    failed: Mutex<HashMap<String, usize>>,
}

impl TerminalProgress {
    /// A terminal observer (draws only when standard error is a terminal).
    pub fn new() -> Self {
        TerminalProgress {
            failed: Mutex::new(HashMap::new()),
        }
    }

    fn replace(&self, bar: Option<ProgressBar>) {
        let mut slot = active();
        if let Some(old) = slot.take() {
            old.finish_and_clear();
        }
        *slot = bar;
    }
}

impl Default for TerminalProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl Observer for TerminalProgress {
    fn reading(&self, what: &str) {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} reading {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(what.to_string());
        bar.enable_steady_tick(Duration::from_millis(100));
        self.replace(Some(bar));
    }
    fn read(&self, what: &str, count: usize) {
        self.replace(None);
        let _ = writeln!(std::io::stderr(), "read {what}: {count}");
    }
    fn phase_start(&self, phase: &str, total: usize) {
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>11} [{bar:30}] {pos}/{len} {msg} ({elapsed}, about {eta} left)",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(phase.to_string());
        self.replace(Some(bar));
    }
    fn write_done(&self, phase: &str, ok: bool) {
        let slot = active();
        let Some(bar) = slot.as_ref() else { return };
        bar.inc(1);
        if !ok {
            let mut f = match self.failed.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let n = f.entry(phase.to_string()).or_default();
            *n += 1;
            bar.set_message(format!("{n} failed"));
        }
    }
    fn phase_end(&self, phase: &str) {
        let mut slot = active();
        if let Some(bar) = slot.take() {
            bar.finish_and_clear();
            let failed = match self.failed.lock() {
                Ok(g) => g.get(phase).copied().unwrap_or(0),
                Err(p) => p.into_inner().get(phase).copied().unwrap_or(0),
            };
            let _ = writeln!(
                std::io::stderr(),
                "{phase:>11}: {} of {} writes done, {failed} failed ({:.1} s)",
                bar.position(),
                bar.length().unwrap_or(0),
                bar.elapsed().as_secs_f64()
            );
        }
    }
    fn finish(&self) {
        self.replace(None);
    }
}

/// A `tracing_subscriber` writer for standard error that hides the active bar while a line is
/// written (use with `fmt().with_writer(LogWriter)`).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let slot = active();
        match slot.as_ref() {
            Some(bar) => bar.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> Self::Writer {
        LogWriter
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn log_progress_writes_a_bounded_number_of_lines() {
        let p = LogProgress::new(Duration::from_secs(5));
        let t0 = Instant::now();
        p.start_at("users", 1000, t0);
        // 1000 writes within one second: a line every tenth (100 writes), the last one ending.
        let lines: Vec<Line> = (1..=1000)
            .filter_map(|i| p.tick_at("users", i % 50 != 0, t0 + Duration::from_millis(i)))
            .collect();
        assert_eq!(lines.len(), 10, "{lines:?}");
        assert_eq!(lines[0].done, 100);
        let last = lines.last().unwrap();
        assert_eq!((last.done, last.total, last.failed), (1000, 1000, 20));
        assert!(last.end);
        assert!(last.rate > 900.0, "{last:?}");
        // The last write already gave the closing line.
        assert_eq!(p.end_at("users", t0 + Duration::from_secs(1)), None);

        // A slow phase: a line whenever the interval passed.
        p.start_at("removals", 30, t0);
        let slow: Vec<Line> = (1..=29)
            .filter_map(|i| p.tick_at("removals", true, t0 + Duration::from_secs(i)))
            .collect();
        assert_eq!(slow.len(), 5, "every 5 s: {slow:?}");
        assert!(slow.iter().all(|l| !l.end));
        // Ended early (the run stopped): a closing line with what was done.
        let end = p.end_at("removals", t0 + Duration::from_secs(30)).unwrap();
        assert_eq!((end.done, end.total, end.end), (29, 30, true));
        // Unknown phases are ignored.
        assert_eq!(p.tick_at("nothing", true, t0), None);
    }

    #[derive(Default)]
    struct Count {
        starts: AtomicUsize,
        writes: AtomicUsize,
        failed: AtomicUsize,
        ends: AtomicUsize,
    }

    impl Observer for Count {
        fn reading(&self, _: &str) {}
        fn read(&self, _: &str, _: usize) {}
        fn phase_start(&self, _: &str, _: usize) {
            self.starts.fetch_add(1, Ordering::SeqCst);
        }
        fn write_done(&self, _: &str, ok: bool) {
            self.writes.fetch_add(1, Ordering::SeqCst);
            if !ok {
                self.failed.fetch_add(1, Ordering::SeqCst);
            }
        }
        fn phase_end(&self, _: &str) {
            self.ends.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn the_scoped_observer_receives_the_events() {
        let count = Arc::new(Count::default());
        let obs: Arc<dyn Observer> = count.clone();
        scope(obs, async {
            let p = current();
            p.phase_start("users", 3);
            for ok in [true, false, true] {
                tokio::task::yield_now().await;
                current().write_done("users", ok);
            }
            p.phase_end("users");
        })
        .await;
        assert_eq!(count.starts.load(Ordering::SeqCst), 1);
        assert_eq!(count.writes.load(Ordering::SeqCst), 3);
        assert_eq!(count.failed.load(Ordering::SeqCst), 1);
        assert_eq!(count.ends.load(Ordering::SeqCst), 1);
        // Outside the scope: the default logger, which keeps no state between calls.
        current().write_done("users", true);
        assert_eq!(count.writes.load(Ordering::SeqCst), 3);
    }
}
