//! The scheduler: turns `[serve.schedule]` (a cron expression read in an explicit time zone, or
//! an interval) into full runs, each delayed by a random jitter, optionally one at start-up. A
//! run due while another is still going is skipped and recorded by the runner.
//!
//! Time is a parameter: the loop reads the wall clock through [`Clock`] and sleeps with tokio,
//! so tests run it under paused tokio time with [`TokioClock`].
//!
//! What does not live here: running anything (the [`Runner`]).

use super::runner::{JobSpec, Runner, Scope};
use crate::config::serve::{Schedule, When};
use chrono::{DateTime, Utc};
use rand::Rng as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The wall clock the schedule is computed from.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A wall clock that advances with tokio's clock (so paused-time tests move it).
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    wall: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// Starts at `wall` now.
    pub fn starting_at(wall: DateTime<Utc>) -> TokioClock {
        TokioClock {
            wall,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now().duration_since(self.start);
        self.wall + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }
}

/// The first time the schedule is due strictly after `after`, or `None` when a cron
/// expression has no further occurrence.
pub fn next_due(s: &Schedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let cron = |c: &croner::Cron| {
        c.find_next_occurrence(&after.with_timezone(&s.time_zone), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    };
    let every = |d: &Duration| Some(after + chrono::Duration::from_std(*d).ok()?);
    match &s.when {
        When::Cron(c) => cron(c),
        When::Interval(d) => every(d),
        When::Both(c, d) => match (cron(c), every(d)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
    }
}

fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=ms))
}

/// Runs the schedule until `shutdown` turns true. `dry_run` makes every scheduled run a plan.
pub async fn run(
    schedule: Schedule,
    clock: Arc<dyn Clock>,
    runner: Arc<Runner>,
    dry_run: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    let spec = |trigger: &str| JobSpec {
        scope: Scope::Full,
        dry_run,
        trigger: trigger.to_string(),
        allow_removals: 0,
    };
    if schedule.run_on_start {
        let _ = runner.submit_unless_busy(spec("schedule"));
    }
    let mut last = clock.now();
    loop {
        let Some(due) = next_due(&schedule, last) else {
            tracing::warn!("the cron expression has no further occurrence; scheduler stopped");
            return;
        };
        let wait = (due - clock.now()).to_std().unwrap_or(Duration::ZERO) + jitter(schedule.jitter);
        tracing::debug!(due = %due, wait_ms = wait.as_millis() as u64, "next scheduled run");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = super::runner::stopped(&mut shutdown) => return,
        }
        let _ = runner.submit_unless_busy(spec("schedule"));
        // Keep the cadence, but never try to catch up on runs missed while suspended.
        let now = clock.now();
        last = match next_due(&schedule, due) {
            Some(n) if n < now => now,
            _ => due,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::super::runner::tests::fake;
    use super::*;
    use std::sync::atomic::Ordering;

    fn interval(secs: u64) -> Schedule {
        Schedule {
            when: When::Interval(Duration::from_secs(secs)),
            jitter: Duration::ZERO,
            time_zone: chrono_tz::UTC,
            run_on_start: true,
        }
    }

    #[test]
    fn cron_is_read_in_its_time_zone() {
        let s = Schedule {
            when: When::Cron(Box::new("0 9 * * *".parse().unwrap())),
            jitter: Duration::ZERO,
            time_zone: chrono_tz::Europe::Madrid,
            run_on_start: false,
        };
        // 09:00 in Madrid in January is 08:00 UTC; in July 07:00 UTC.
        let jan: DateTime<Utc> = "2026-01-15T00:00:00Z".parse().unwrap();
        assert_eq!(
            next_due(&s, jan).unwrap().to_rfc3339(),
            "2026-01-15T08:00:00+00:00"
        );
        let jul: DateTime<Utc> = "2026-07-15T08:30:00Z".parse().unwrap();
        assert_eq!(
            next_due(&s, jul).unwrap().to_rfc3339(),
            "2026-07-16T07:00:00+00:00"
        );
    }

    #[test]
    fn cron_and_interval_together_run_at_whichever_comes_first() {
        let s = Schedule {
            when: When::Both(
                Box::new("0 2 * * *".parse().unwrap()),
                Duration::from_secs(6 * 3600),
            ),
            jitter: Duration::ZERO,
            time_zone: chrono_tz::UTC,
            run_on_start: false,
        };
        let at = |t: &str| -> DateTime<Utc> { t.parse().unwrap() };
        // 23:00: the cron's 02:00 comes before the interval's 05:00.
        assert_eq!(
            next_due(&s, at("2026-03-01T23:00:00Z")),
            Some(at("2026-03-02T02:00:00Z"))
        );
        // 02:00: the interval's 08:00 comes before the next cron (02:00 tomorrow).
        assert_eq!(
            next_due(&s, at("2026-03-02T02:00:00Z")),
            Some(at("2026-03-02T08:00:00Z"))
        );
        assert_eq!(
            next_due(&s, at("2026-03-02T20:00:00Z")),
            Some(at("2026-03-03T02:00:00Z"))
        );
    }

    #[test]
    fn jitter_stays_within_bounds() {
        for _ in 0..100 {
            assert!(jitter(Duration::from_secs(3)) <= Duration::from_secs(3));
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn runs_longer_than_the_interval_never_overlap_and_skips_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        // Each run takes 90 s; one is due every 60 s.
        let (exec, runner, store) = fake(dir.path(), Duration::from_secs(90));
        let (tx, rx) = watch::channel(false);
        let local = tokio::task::LocalSet::new();
        let worker = local.spawn_local(runner.clone().work(rx.clone()));
        local
            .run_until(async move {
                let clock = Arc::new(TokioClock::starting_at(
                    "2026-03-01T00:00:00Z".parse().unwrap(),
                ));
                let sched = tokio::spawn(run(interval(60), clock, runner.clone(), false, rx));
                // 0 s: start run; 60 s: skipped (running); 90 s: first ends; 120 s: runs; 180 s:
                // skipped; 210 s: ends; 240 s: runs; 300 s: skipped; 330 s: ends.
                tokio::time::sleep(Duration::from_secs(335)).await;
                tx.send(true).unwrap();
                sched.await.unwrap();
                worker.await.unwrap();
                assert_eq!(
                    exec.max_running.load(Ordering::SeqCst),
                    1,
                    "runs overlapped"
                );
                let runs = store.runs(100).unwrap();
                let count = |o: &str| runs.iter().filter(|r| r.outcome == o).count();
                assert_eq!(count("succeeded"), 3, "{runs:#?}");
                assert_eq!(count("skipped"), 3, "{runs:#?}");
                for r in runs.iter().filter(|r| r.outcome == "skipped") {
                    assert_eq!(r.trigger, "schedule");
                    assert!(r.summary["reason"]
                        .as_str()
                        .unwrap()
                        .contains("still going"));
                }
            })
            .await;
    }
}
