//! `ironbridge plan`, `apply` and `preview`: the dry run with its reports and saved plans, the
//! apply of a fresh or saved plan, and the step-by-step view of one person.
//!
//! Saved plans are JSON (`ironbridge.saved-plan/v1`) holding the plan and what it saw of each
//! Ironclad object; applying one refuses, by name, every object changed since.

use super::Exit;
use crate::config::Config;
use crate::reconcile::apply::{self, ApplyReport, Audit};
use crate::reconcile::engine::{Engine, RunOptions};
use crate::reconcile::progress;
use crate::reconcile::users::{last_modified, IroncladUser};
use crate::reconcile::{GroupAction, Plan, UserAction};
use crate::report::{self, Format};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The saved-plan schema identifier.
pub const SAVED_PLAN_SCHEMA: &str = "ironbridge.saved-plan/v1";

#[derive(Serialize, Deserialize)]
struct SavedPlan {
    schema: String,
    config: String,
    /// The Ironclad SCIM address the plan was made against: applying it through a
    /// configuration that points elsewhere is refused.
    #[serde(default)]
    tenant: Option<String>,
    plan: Plan,
}

/// `plan`: the dry run. Writes nothing to Ironclad.
pub async fn plan(
    config: &Path,
    out: Option<&Path>,
    report_file: Option<&Path>,
    format: Format,
) -> anyhow::Result<Exit> {
    if out.is_some_and(|o| o.as_os_str() == "-") {
        anyhow::bail!(
            "--out needs a file: a saved plan is applied later with `apply --plan FILE` \
             (`--report - --format json` prints the plan)"
        );
    }
    let planned = async {
        let engine = Engine::open(Config::load(config)?)?;
        let r = with_progress(engine.run(&RunOptions {
            trigger: "cli".into(),
            ..Default::default()
        }))
        .await?;
        anyhow::Ok((engine, r))
    }
    .await;
    let (engine, r) = match planned {
        Ok(x) => x,
        Err(e) => {
            // A report or saved plan left from an earlier run must not pass for this one's (a
            // job publishing the report would show the last good plan as current).
            for path in [report_file, out]
                .into_iter()
                .flatten()
                .filter(|p| is_earlier_plan(p))
            {
                if std::fs::remove_file(path).is_ok() {
                    eprintln!(
                        "removed {}: it was an earlier plan's, and this one failed",
                        path.display()
                    );
                }
            }
            return Err(e);
        }
    };
    emit_report(&r.plan, report_file, format)?;
    if let Some(path) = out {
        let saved = SavedPlan {
            schema: SAVED_PLAN_SCHEMA.into(),
            config: config.display().to_string(),
            tenant: Some(engine.cfg.ironclad.scim_url.to_string()),
            plan: r.plan.clone(),
        };
        write_private(path, &serde_json::to_vec_pretty(&saved)?)?;
        eprintln!(
            "plan saved to {} (apply it with `ironbridge apply --plan {}`)",
            path.display(),
            path.display()
        );
    }
    let exit = plan_exit(&r.plan);
    // The store is closed here (its final checkpoint); the plan is freed aside.
    drop(engine);
    crate::reconcile::drop_aside(r);
    Ok(exit)
}

/// Whether `path` is a regular file (not a link, device or directory) holding a report or
/// saved plan ironbridge wrote: only such a file is removed when a plan fails.
fn is_earlier_plan(path: &Path) -> bool {
    use std::io::Read as _;
    let regular = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file());
    if !regular {
        return false;
    }
    let mut head = [0u8; 1024];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    let head = String::from_utf8_lossy(&head[..n]);
    head.starts_with("Plan made ")
        || head.starts_with("# ironbridge plan")
        || head.starts_with("kind,action,name,source,")
        || head.contains("<title>ironbridge plan")
        || head.contains(&format!("\"{}\"", report::JSON_SCHEMA))
        || head.contains(&format!("\"{SAVED_PLAN_SCHEMA}\""))
}

/// Runs `fut` with progress shown: bars on a terminal, structured log lines otherwise. Bars are
/// cleared before the report is printed.
async fn with_progress<F: std::future::Future>(fut: F) -> F::Output {
    let observer = progress::for_cli();
    let out = progress::scope(observer.clone(), fut).await;
    observer.finish();
    out
}

fn plan_exit(plan: &Plan) -> Exit {
    if !plan.source_complete {
        Exit::Error
    } else if plan.has_writes() || plan.has_held() {
        Exit::Pending
    } else {
        Exit::Ok
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.create(true).truncate(true).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(0o600);
    }
    use std::io::Write as _;
    let mut f = o
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

fn emit_report(plan: &Plan, file: Option<&Path>, format: Format) -> anyhow::Result<()> {
    // `--report -`: the report on standard output, in place of the table.
    let file = file.filter(|f| f.as_os_str() != "-");
    match file {
        Some(f) => {
            // Mode 0600, as the saved plan: a report names people and what changes for them.
            let text = report::render(plan, format, false)?;
            write_private(f, text.as_bytes())?;
            eprintln!("report written to {}", f.display());
            // The terminal still gets the short table.
            print!(
                "{}",
                report::render(plan, Format::Text, std::io::stdout().is_terminal())?
            );
        }
        None => {
            let colour = format == Format::Text && std::io::stdout().is_terminal();
            print!("{}", report::render(plan, format, colour)?);
        }
    }
    Ok(())
}

/// Options of `apply`.
#[derive(Debug, Clone, Default)]
pub struct ApplyArgs {
    /// Configuration file.
    pub config: PathBuf,
    /// A saved plan to apply exactly.
    pub plan: Option<PathBuf>,
    /// Only these people.
    pub only: Vec<String>,
    /// Removals allowed beyond the threshold.
    pub allow_removals: usize,
    /// Apply without showing the plan and asking first (required without a terminal).
    pub yes: bool,
}

/// `apply`: a fresh plan applied, or a saved plan applied exactly.
pub async fn apply(args: ApplyArgs) -> anyhow::Result<Exit> {
    let engine = Engine::open(Config::load(&args.config)?)?;
    let lock = RunLock::take(engine.store.clone())?;
    let only = (!args.only.is_empty()).then(|| args.only.iter().cloned().collect::<BTreeSet<_>>());
    // Without --yes, nothing is written that was not shown and confirmed on a terminal.
    if !args.yes {
        let tenant = engine.cfg.ironclad.scim_url.to_string();
        if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
            anyhow::bail!(
                "apply writes to {tenant} and there is no terminal to confirm on: pass --yes \
                 (run `ironbridge plan` first to see what it would change)"
            );
        }
        let question = match &args.plan {
            Some(path) => {
                let saved = load_saved(path)?;
                print!(
                    "{}",
                    report::render(&saved.plan, Format::Text, std::io::stdout().is_terminal())?
                );
                format!(
                    "apply the saved plan {} (made {}) to {tenant}? Lines changed in Ironclad \
                     since, or no longer allowed, are refused",
                    path.display(),
                    saved.plan.created_at.to_rfc3339()
                )
            }
            None => {
                let preview = with_progress(engine.run(&RunOptions {
                    apply: false,
                    allow_removals: args.allow_removals,
                    only: only.clone(),
                    trigger: "cli".into(),
                    only_must_match: true,
                }))
                .await?;
                print!(
                    "{}",
                    report::render(&preview.plan, Format::Text, std::io::stdout().is_terminal())?
                );
                if !preview.plan.has_writes() {
                    eprintln!("nothing to apply");
                    return Ok(plan_exit(&preview.plan));
                }
                format!("apply these changes to {tenant}?")
            }
        };
        eprint!("{question} [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            eprintln!("nothing applied");
            return Ok(Exit::Pending);
        }
    }
    // SIGINT or SIGTERM (Ctrl-C, a deleted pod, a job deadline) stops the run the way `serve`
    // stops: the writes in flight finish and are audited, the rest are refused and left to the
    // next run. A second signal quits at once.
    let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    tokio::spawn(async move {
        crate::serve::signals().await;
        stop.store(true, Ordering::SeqCst);
        eprintln!(
            "stopping: nothing more is sent, the writes in flight finish, the rest are left \
             to the next run (a second signal quits at once)"
        );
        crate::serve::signals().await;
        eprintln!("quitting at once; the next run settles the writes in flight");
        std::process::exit(Exit::Error as i32);
    });
    let (plan, report) = match &args.plan {
        None => {
            let run_id = uuid::Uuid::new_v4().to_string();
            let opts = RunOptions {
                apply: true,
                allow_removals: args.allow_removals,
                only,
                trigger: "cli".into(),
                only_must_match: true,
            };
            let r = with_progress(engine.run_with(&run_id, &opts, Some(stop))).await?;
            let report = r.applied.unwrap_or_default();
            (r.plan, report)
        }
        Some(path) => with_progress(apply_saved(&engine, path, only.as_ref(), stop)).await?,
    };
    let stopped = stop.load(Ordering::SeqCst);
    // The run lock is released and the store closed (which checkpoints its log into the
    // database file) while the report is rendered.
    let closing = std::thread::Builder::new()
        .name("ironbridge-close".into())
        .spawn(move || {
            drop(lock);
            drop(engine);
        });
    let rendered = report::render(&plan, Format::Text, std::io::stdout().is_terminal());
    if let Ok(closing) = closing {
        if closing.join().is_err() {
            tracing::error!("closing the state store panicked");
        }
    }
    print!("{}", rendered?);
    print_outcomes(&report);
    if plan.source_incomplete.is_some() {
        eprintln!(
            "the source's users listing was incomplete: the people read were created and updated, nobody was removed (see the notes above)"
        );
    } else if !plan.source_complete {
        eprintln!(
            "the source could not be read or mapped: nothing was removed (see the notes above)"
        );
    }
    if stopped {
        eprintln!(
            "interrupted: {} writes were not sent; the next run applies them",
            report.refused()
        );
    }
    let exit = if stopped || report.failed() > 0 || !plan.source_complete {
        Exit::Error
    } else if report.refused() > 0 || plan.has_held() {
        Exit::Pending
    } else {
        Exit::Ok
    };
    crate::reconcile::drop_aside((plan, report));
    Ok(exit)
}

/// The state store's run lock, held by a CLI apply for its whole run so it never writes at the
/// same time as `serve` or another apply on the same store. A heartbeat every 20 s keeps it
/// from looking stale; dropping the guard releases it.
struct RunLock {
    store: std::sync::Arc<crate::store::Store>,
    holder: String,
    beat: tokio::task::JoinHandle<()>,
}

impl RunLock {
    /// Locks older than this without a heartbeat belong to a process that died.
    const STALE_SECS: i64 = 120;

    fn take(store: std::sync::Arc<crate::store::Store>) -> anyhow::Result<RunLock> {
        let holder = crate::store::lock_holder("cli");
        let now = chrono::Utc::now();
        let stale = chrono::Duration::seconds(Self::STALE_SECS);
        if let Err(e) = store.try_lock(&holder, now, stale) {
            // A holder on this machine whose process is gone (killed) cannot be running: its
            // lock is taken over at once instead of after the stale period.
            let dead = match &e {
                crate::store::StoreError::Locked { holder: other, .. } => {
                    crate::store::holder_is_dead(other)
                }
                _ => false,
            };
            if !dead {
                return Err(anyhow::anyhow!("{e}; try again when it ends"));
            }
            store.try_lock(&holder, now, chrono::Duration::zero())?;
        }
        // We hold the lock: a run still marked running was cut short (killed).
        if let Ok(n) = store.mark_interrupted(now) {
            if n > 0 {
                tracing::warn!(
                    runs = n,
                    "runs left running by an earlier process marked interrupted"
                );
            }
        }
        let beat = store.spawn_heartbeat(holder.clone(), std::time::Duration::from_secs(20));
        Ok(RunLock {
            store,
            holder,
            beat,
        })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        self.beat.abort();
        if let Err(e) = self.store.unlock(&self.holder) {
            tracing::warn!(error = %e, "cannot release the run lock");
        }
    }
}

fn print_outcomes(report: &ApplyReport) {
    let counts: Vec<String> = report
        .counts
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    let ops: Vec<String> = report
        .operations
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    println!(
        "Outcome of each change (users and groups): {}",
        if counts.is_empty() {
            "nothing was attempted".to_string()
        } else {
            counts.join(", ")
        }
    );
    if !ops.is_empty() {
        println!(
            "Method chosen per user write (refused ones included): {}",
            ops.join(", ")
        );
    }
    for o in report.outcomes.iter().filter(|o| o.result != "applied") {
        println!(
            "  {} {} {}: {}",
            o.result,
            o.action,
            report::visible(&o.name),
            report::visible(o.detail.as_deref().unwrap_or(""))
        );
    }
}

/// Reads a saved plan file (`plan --out`).
fn load_saved(path: &Path) -> anyhow::Result<SavedPlan> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let saved: SavedPlan = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not a saved plan: {e}", path.display()))?;
    if saved.schema != SAVED_PLAN_SCHEMA {
        anyhow::bail!(
            "{}: schema {} is not {SAVED_PLAN_SCHEMA}",
            path.display(),
            saved.schema
        );
    }
    Ok(saved)
}

/// Applies a saved plan, refusing every object that changed since it was made.
async fn apply_saved(
    engine: &Engine,
    path: &Path,
    only: Option<&BTreeSet<String>>,
    stop: &AtomicBool,
) -> anyhow::Result<(Plan, ApplyReport)> {
    let saved = load_saved(path)?;
    let here = engine.cfg.ironclad.scim_url.to_string();
    if let Some(there) = saved.tenant.as_deref().filter(|t| *t != here) {
        anyhow::bail!(
            "{}: the plan was made against {there}, but {} points at {here}; nothing applied \
             (make a new plan with this configuration)",
            path.display(),
            engine.cfg.path.display()
        );
    }
    let mut plan = saved.plan;
    if let Some(o) = only {
        let nobody = crate::reconcile::engine::names_matching_nobody(&plan, o);
        if !nobody.is_empty() {
            anyhow::bail!(
                "--only {}: no line of the saved plan {} has this source id, DN, userName or \
                 Ironclad id; nothing applied",
                nobody.join(", "),
                path.display()
            );
        }
        crate::reconcile::engine::restrict(&mut plan, o);
    }
    // A reviewed plan applied is a run for the grace periods: what it saw of the people
    // missing counts, once, unless a later apply has counted that run already (the same plan
    // applied again, or a fresh apply since it was made).
    let waits_for_grace = plan.users.iter().any(|u| {
        matches!(
            u.action,
            UserAction::Skip {
                reason: crate::reconcile::SkipReason::Grace { .. }
            }
        )
    });
    let grace_note = if engine.store.applies_since(plan.created_at)? == 0 {
        engine.record_run_counters(&plan, chrono::Utc::now())?;
        None
    } else {
        Some("grace periods were not advanced: an apply has run since this plan was made")
    };
    let seen_at = std::time::Instant::now();
    let target = engine.read_target().await?;
    let mut refused = refuse_stale(&mut plan, &target.users, &target.groups);
    let names: HashMap<&str, &str> = target
        .users
        .iter()
        .map(|u| (&*u.id, &*u.user_name))
        .collect();
    refused.extend(
        engine.refuse_disallowed_now(&mut plan, &|id| names.get(id).map(|n| n.to_string())),
    );
    let run_id = uuid::Uuid::new_v4().to_string();
    let now = chrono::Utc::now();
    engine
        .store
        .start_run(&run_id, "cli:saved-plan", "apply", now)?;
    let audit = Audit::open(engine.store.clone(), &engine.cfg.audit_log, &run_id)
        .map_err(|e| anyhow::anyhow!(e))?;
    let mut report = apply::apply_until(
        &plan,
        &engine.client,
        &engine.store,
        &audit,
        &engine.apply_options(&run_id, true, seen_at),
        Some(stop),
    )
    .await;
    // The held removals of a reviewed plan were carried out: report them as the removals
    // they were (and not as held back, which would make the exit code 2).
    let mut released = 0;
    for u in &mut plan.users {
        if let Some(a) = u.held_action.take() {
            u.action = *a;
            released += 1;
        }
    }
    // The report shows what this apply did: the lines as applied (refused ones as `refused` skips) and
    // no note inviting to release holds that were just carried out.
    plan.summary = crate::reconcile::plan::summarize(&plan.users, &plan.groups);
    plan.notes
        .retain(|n| !n.starts_with(crate::reconcile::plan::REMOVALS_HELD));
    let mut note = format!(
        "applied from the reviewed saved plan {} (made {})",
        path.display(),
        plan.created_at.to_rfc3339()
    );
    if released > 0 {
        note.push_str(&format!(
            "; the {released} removals it held were carried out"
        ));
    }
    if !refused.is_empty() {
        note.push_str(&format!(
            "; {} lines were refused: changed in Ironclad since, or not allowed by the \
             configuration as it is now (below)",
            refused.len()
        ));
    }
    plan.notes.push(note);
    if let Some(n) = grace_note.filter(|_| waits_for_grace) {
        plan.notes.push(n.to_string());
    }
    // Each refused line is in the audit too: what the reviewed plan had, and why it was not
    // sent.
    for u in &plan.users {
        if let UserAction::Skip {
            reason: crate::reconcile::SkipReason::Refused { action, why },
        } = &u.action
        {
            audit.refused(u, action, why).await;
        }
    }
    drop(audit);
    for (name, action, why) in refused {
        report.outcomes.push(apply::Outcome {
            name,
            action,
            result: "refused".into(),
            detail: Some(why),
        });
        *report.counts.entry("refused".into()).or_default() += 1;
    }
    let outcome = if stop.load(Ordering::SeqCst) && report.refused() > 0 {
        "interrupted"
    } else if plan.source_incomplete.is_some() {
        "source_incomplete"
    } else if report.failed() > 0 {
        "partial"
    } else {
        "succeeded"
    };
    engine.store.finish_run(
        &run_id,
        outcome,
        &serde_json::json!({"applied": report.counts}),
        chrono::Utc::now(),
    )?;
    Ok((plan, report))
}

/// Turns every line whose object changed since the plan into a `refused` skip; returns what was
/// refused.
fn refuse_stale(
    plan: &mut Plan,
    users: &[IroncladUser],
    groups: &[serde_json::Value],
) -> Vec<(String, String, String)> {
    let by_id: HashMap<&str, &IroncladUser> = users.iter().map(|u| (&*u.id, u)).collect();
    // Each userName in Ironclad now (lower-cased), with the id of the user holding it.
    let names: HashMap<String, &str> = users
        .iter()
        .filter(|u| !u.user_name.is_empty())
        .map(|u| (u.user_name.to_lowercase(), &*u.id))
        .collect();
    let mut refused = Vec::new();
    for u in &mut plan.users {
        let writes = u.action.writes() || u.held_action.is_some();
        if !writes {
            continue;
        }
        let why = match (&u.action, &u.ironclad_id) {
            (UserAction::Create { .. }, _) if names.contains_key(&u.user_name.to_lowercase()) => {
                Some("a user with this userName was created since the plan was made".to_string())
            }
            (UserAction::Create { .. }, _) => None,
            (UserAction::Rename { to, .. }, Some(id))
                if names
                    .get(&to.to_lowercase())
                    .is_some_and(|holder| *holder != id.as_str()) =>
            {
                Some(format!(
                    "the userName {to} was taken by another Ironclad user since the plan was made"
                ))
            }
            (_, Some(id)) => match by_id.get(id.as_str()) {
                None => Some("the Ironclad user no longer exists".to_string()),
                Some(cur) if cur.version.as_deref() != u.seen_version.as_deref() => Some(format!(
                    "changed in Ironclad since the plan was made (lastModified {} → {})",
                    u.seen_version.as_deref().unwrap_or("?"),
                    cur.version.as_deref().unwrap_or("?")
                )),
                Some(_) => None,
            },
            (_, None) => None,
        };
        if let Some(why) = why {
            // A held removal is refused as the removal it is.
            let action = u.held_action.as_deref().unwrap_or(&u.action).name();
            refused.push((u.user_name.clone(), action.to_string(), why.clone()));
            u.action = UserAction::Skip {
                reason: crate::reconcile::SkipReason::Refused {
                    action: action.to_string(),
                    why,
                },
            };
            u.held_action = None;
        } else if let (Some(id), Some(_)) = (&u.ironclad_id, &u.seen) {
            // A PUT starts from the user as just listed, not from the copy in the plan file
            // (the same by `lastModified`, but a server may not move it for every change).
            if let Some(cur) = by_id.get(id.as_str()) {
                u.seen = Some(cur.value());
            }
        }
    }
    let gby: HashMap<&str, &serde_json::Value> = groups
        .iter()
        .filter_map(|g| Some((g.get("id")?.as_str()?, g)))
        .collect();
    for g in &mut plan.groups {
        let Some(id) = &g.ironclad_id else { continue };
        if matches!(
            g.action,
            GroupAction::Noop | GroupAction::Skip { .. } | GroupAction::Conflict { .. }
        ) {
            continue;
        }
        let stale = match gby.get(id.as_str()) {
            None => Some("the Ironclad group no longer exists".to_string()),
            Some(cur) if last_modified(cur) != g.seen_version.as_deref() => {
                Some("changed in Ironclad since the plan was made".to_string())
            }
            Some(_) => None,
        };
        if let Some(why) = stale {
            refused.push((g.display_name.clone(), "group".into(), why));
            g.action = GroupAction::Noop;
            g.add.clear();
            g.remove.clear();
        }
    }
    refused
}

/// `preview --user ID`: one person, every step shown.
pub async fn preview(config: &Path, user: &str) -> anyhow::Result<Exit> {
    let engine = Engine::open(Config::load(config)?)?;
    let now = chrono::Utc::now();
    println!("1. Source: {}", engine.source_description());
    let (desired, snapshot) = engine.desired(now, false).await;
    let Some(snap) = snapshot else {
        println!("   read FAILED: {}", desired.err().unwrap_or_default());
        return Ok(Exit::Error);
    };
    println!(
        "   read {} users and {} groups",
        snap.users.len(),
        snap.groups.len()
    );
    if let Ok(Some(why)) = desired.as_ref().map(|d| d.incomplete.as_deref()) {
        println!("   INCOMPLETE: the users listing was cut short ({why}); people after the cut were not read");
    }
    let entry = match find_person(&snap.users, user) {
        Ok(entry) => entry,
        Err(why) => {
            println!("   {why}");
            // Not in the source: a leaver, perhaps. What the plan does with an Ironclad user of
            // that userName, email or id is what a reviewer needs to see.
            if matches!(why, NotFound::Nobody { .. }) {
                return preview_ironclad_only(&engine, desired, user, now).await;
            }
            return Ok(Exit::Error);
        }
    };
    println!(
        "   found {} (id {})",
        report::visible(&entry.locator),
        report::visible(&entry.id)
    );
    println!("\n2. Entry attributes:");
    for (name, values) in entry.attrs.iter() {
        if crate::model::is_secret_attribute(name) {
            println!("   {name}: ***redacted***");
            continue;
        }
        let vals: Vec<String> = values.iter().map(|v| v.as_text().into_owned()).collect();
        println!("   {name}: {}", report::visible(&vals.join(" | ")));
    }
    println!("\n3. Scope and mapping:");
    let prepared = engine.mapping.prepare_shared(snap.clone(), now)?;
    match prepared.evaluate_id(&entry.id) {
        Some(Ok(ev)) => {
            println!(
                "   in scope: {} (decided by {} at line {}); disabled: {}; desired in Ironclad: {}",
                ev.in_scope, ev.decided_by.text, ev.decided_by.line, ev.disabled, ev.desired
            );
            if let Some(u) = &ev.user {
                let label = if ev.desired {
                    "Ironclad user the mapping gives"
                } else {
                    "what the mapping gives (not wanted in Ironclad: never created from this)"
                };
                println!(
                    "   {label}:\n{}",
                    indent(&serde_json::to_string_pretty(&u.scim())?)
                );
            }
        }
        Some(Err(e)) => println!("   mapping error: {e}"),
        None => println!("   not evaluated"),
    }
    println!("\n4. Match and action:");
    let target = engine.read_target().await?;
    let mut plan = engine.plan_with(desired, &target, &RunOptions::default(), now)?;
    let mut only = BTreeSet::new();
    only.insert(entry.id.clone());
    only.insert(entry.locator.clone());
    crate::reconcile::engine::restrict(&mut plan, &only);
    match plan.users.first() {
        Some(line) => {
            println!(
                "   Ironclad id: {}",
                line.ironclad_id
                    .as_deref()
                    .unwrap_or("(none: no Ironclad user is linked to or matches this person)")
            );
            print!("{}", indent(&report::render(&plan, Format::Text, false)?));
        }
        None => println!("   nothing planned for this person"),
    }
    Ok(plan_exit(&plan))
}

/// `preview` of someone the source does not have: the plan's line for the Ironclad user named
/// by `user` (userName, email or id), such as a removal.
async fn preview_ironclad_only(
    engine: &Engine,
    desired: Result<crate::reconcile::engine::DesiredSets, String>,
    user: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Exit> {
    let target = engine.read_target().await?;
    let mut plan = engine.plan_with(desired, &target, &RunOptions::default(), now)?;
    let only: BTreeSet<String> = [user.to_string()].into();
    crate::reconcile::engine::restrict(&mut plan, &only);
    let Some(line) = plan.users.first() else {
        let needle = user.trim().to_lowercase();
        let held = target.users.iter().find(|u| {
            u.id.to_lowercase() == needle
                || u.user_name.trim().to_lowercase() == needle
                || u.emails.iter().any(|e| e.trim().to_lowercase() == needle)
        });
        return match held {
            Some(u) => {
                println!(
                    "\n2. In Ironclad: {} (id {}), not in the source",
                    report::visible(&u.user_name),
                    u.id
                );
                println!(
                    "\n3. Action: none. ironbridge does not manage this user (no link in the state \
                     store, and no externalId of a source entry), so it never updates or removes it"
                );
                Ok(Exit::Ok)
            }
            None => {
                println!("   nor does Ironclad have a user with this userName, email or id");
                Ok(Exit::Error)
            }
        };
    };
    println!(
        "\n2. In Ironclad: {} (id {}), not in the source",
        report::visible(&line.user_name),
        line.ironclad_id.as_deref().unwrap_or("?")
    );
    println!("\n3. Action:");
    print!("{}", indent(&report::render(&plan, Format::Text, false)?));
    Ok(plan_exit(&plan))
}

/// The one source entry `user` names: its id or DN first (any case); otherwise the one entry
/// holding `user` as an attribute value (secret attributes aside). A value several entries
/// hold (a manager's DN, a department) names none of them: the error lists them.
fn find_person<'a>(
    users: &'a [crate::model::Entry],
    user: &str,
) -> Result<&'a crate::model::Entry, NotFound> {
    let needle = user.trim().to_lowercase();
    if let Some(e) = users
        .iter()
        .find(|e| e.id.to_lowercase() == needle || e.locator.to_lowercase() == needle)
    {
        return Ok(e);
    }
    let holders: Vec<&crate::model::Entry> = users
        .iter()
        .filter(|e| {
            e.attrs.iter().any(|(n, vs)| {
                !crate::model::is_secret_attribute(n)
                    && vs.iter().any(|v| v.as_text().to_lowercase() == needle)
            })
        })
        .collect();
    match holders.as_slice() {
        [] => Err(NotFound::Nobody {
            user: user.to_string(),
        }),
        [one] => Ok(one),
        many => {
            let shown: Vec<&str> = many.iter().take(10).map(|e| &*e.locator).collect();
            let more = many.len().saturating_sub(shown.len());
            Err(NotFound::Several(format!(
                "{} entries hold the value {user:?}; name one by its id or DN: {}{}",
                many.len(),
                shown.join("; "),
                if more > 0 {
                    format!(" (and {more} more)")
                } else {
                    String::new()
                }
            )))
        }
    }
}

/// Why [`find_person`] names no entry.
#[derive(Debug)]
enum NotFound {
    /// No entry has the id, DN or value.
    Nobody {
        /// The name given.
        user: String,
    },
    /// Several entries hold the value (the text lists them).
    Several(String),
}

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotFound::Nobody { user } => write!(
                f,
                "no source entry has the id, DN or an attribute value {user:?}"
            ),
            NotFound::Several(text) => f.write_str(text),
        }
    }
}

/// `s` indented, each line [`report::visible`] (directory values can hold anything).
fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("   {}\n", report::visible(l)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Attributes, Entry};

    fn entry(id: &str, dn: &str, attrs: &[(&str, &str)]) -> Entry {
        let mut a = Attributes::new();
        for (n, v) in attrs {
            a.push(n, *v);
        }
        Entry {
            id: id.into(),
            locator: dn.into(),
            attrs: a,
        }
    }

    #[test]
    fn preview_finds_a_person_by_id_or_dn_before_any_attribute_and_never_guesses() {
        let boss = "uid=boss,ou=people,dc=x";
        let users = vec![
            entry(
                "1",
                "uid=ann,ou=people,dc=x",
                &[("manager", boss), ("ou", "Legal")],
            ),
            entry(
                "2",
                "uid=bob,ou=people,dc=x",
                &[("manager", boss), ("ou", "Legal")],
            ),
            entry("3", boss, &[("uid", "boss"), ("userPassword", "s3cret")]),
        ];
        // The DN names its entry, not the people whose manager it is.
        assert_eq!(
            find_person(&users, "UID=Boss,ou=people,dc=x").unwrap().id,
            "3"
        );
        assert_eq!(find_person(&users, " 2 ").unwrap().id, "2");
        assert_eq!(find_person(&users, "boss").unwrap().id, "3");
        // A value two entries hold names neither.
        let err = find_person(&users, "legal").unwrap_err().to_string();
        assert!(err.contains("2 entries hold"), "{err}");
        assert!(err.contains("uid=ann") && err.contains("uid=bob"), "{err}");
        // Secret attributes are never matched.
        assert!(find_person(&users, "s3cret").is_err());
    }
}
