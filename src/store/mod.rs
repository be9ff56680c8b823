//! The embedded state store: one SQLite file (WAL mode) holding what ironbridge must remember
//! between runs: links (source id ↔ Ironclad id), run history with summaries, the audit log of
//! every write (intent before sending, outcome after), quarantine of users that keep failing,
//! grace counters for people missing from the source, fingerprints of users a run found
//! converged, and the single-instance run lock (with this process's holder name and the
//! heartbeat that keeps a held lock fresh).
//!
//! Each step is its own transaction, so a process killed at any point (kill -9 included) leaves
//! the file consistent: at worst an intent without its outcome, which the next run re-reads.
//!
//! What does not live here: deciding anything. The reconciler reads and writes through
//! [`Store`]; the store never interprets users.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Schema version written to `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS links (
    source_id    TEXT PRIMARY KEY,
    ironclad_id  TEXT NOT NULL UNIQUE,
    user_name    TEXT NOT NULL,
    kind         TEXT NOT NULL DEFAULT 'user',
    linked_at    TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id           TEXT PRIMARY KEY,
    trigger      TEXT NOT NULL,
    mode         TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    outcome      TEXT NOT NULL,
    summary      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS runs_started ON runs(started_at);
CREATE TABLE IF NOT EXISTS audit (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id       TEXT NOT NULL,
    time         TEXT NOT NULL,
    phase        TEXT NOT NULL,
    action       TEXT NOT NULL,
    user_name    TEXT NOT NULL,
    source_id    TEXT,
    ironclad_id  TEXT,
    before       TEXT,
    after        TEXT,
    http_status  INTEGER,
    request_id   TEXT,
    error        TEXT
);
CREATE INDEX IF NOT EXISTS audit_run ON audit(run_id);
CREATE TABLE IF NOT EXISTS quarantine (
    source_id    TEXT PRIMARY KEY,
    failures     INTEGER NOT NULL,
    last_error   TEXT NOT NULL,
    last_failed  TEXT NOT NULL,
    retry_after  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS grace (
    source_id    TEXT PRIMARY KEY,
    first_missing TEXT NOT NULL,
    missed_runs  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS run_reports (
    run_id       TEXT PRIMARY KEY,
    plan         TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS converged (
    source_id    TEXT PRIMARY KEY,
    fingerprint  BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key          TEXT PRIMARY KEY,
    value        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pending_creates (
    source_id    TEXT PRIMARY KEY,
    user_name    TEXT NOT NULL,
    run_id       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS run_lock (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    holder       TEXT NOT NULL,
    acquired_at  TEXT NOT NULL,
    heartbeat    TEXT NOT NULL
);
"#;

/// A store problem, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error. (Not a `#[source]`: the message already says it, and a
    /// chain printed whole would say it twice.)
    #[error("state store {path}: {}{}", sqlite_text(error), sqlite_hint(error))]
    Sqlite {
        /// The database file.
        path: String,
        /// SQLite's error.
        error: rusqlite::Error,
    },
    /// The file was written by a newer ironbridge.
    #[error("state store {path}: schema version {found} is newer than this build understands ({SCHEMA_VERSION})")]
    TooNew {
        /// The database file.
        path: String,
        /// Version found.
        found: i64,
    },
    /// A JSON column could not be encoded or decoded.
    #[error("state store {path}: {message}")]
    Json {
        /// The database file.
        path: String,
        /// What failed.
        message: String,
    },
    /// The store's links are another tenant's Ironclad ids.
    #[error(
        "state store {path} belongs to the Ironclad tenant at {bound}, and this configuration \
         points at {wanted}. A state store links source entries to one tenant's Ironclad ids: \
         give this tenant a state store of its own ([state] path), for example after trying \
         ironbridge against ironclad-sim, or move this file away if the tenant's address changed \
         (the next run then links everyone again by externalId)"
    )]
    OtherTenant {
        /// The database file.
        path: String,
        /// The tenant it belongs to.
        bound: String,
        /// The tenant the configuration names.
        wanted: String,
    },
    /// Another ironbridge holds the run lock.
    #[error("state store {path}: another ironbridge instance ({holder}) is running a reconciliation since {since}")]
    Locked {
        /// The database file.
        path: String,
        /// Who holds it.
        holder: String,
        /// Since when.
        since: String,
    },
}

/// SQLite's message once: its own text when it has one, else the error code's.
fn sqlite_text(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(_, Some(msg)) => msg.clone(),
        other => other.to_string(),
    }
}

/// What to do about a damaged file.
fn sqlite_hint(e: &rusqlite::Error) -> &'static str {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
            " (the file is damaged or not a state store: restore it from a backup, or move it \
             away and the next run links everyone again by externalId, but cannot remove people \
             who left since the last good run: its plan lists them; until then nothing is \
             written)"
        }
        _ => "",
    }
}

/// A link between a source entry and an Ironclad object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Stable source id.
    pub source_id: String,
    /// Ironclad id.
    pub ironclad_id: String,
    /// userName (users) or displayName (groups) when last written.
    pub user_name: String,
    /// `user` or `group`.
    pub kind: String,
}

/// One run's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Run id.
    pub id: String,
    /// What started it (`cli`, `schedule`, `webhook:okta`, `api`).
    pub trigger: String,
    /// `plan` or `apply`.
    pub mode: String,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// End time, when finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// `running`, `succeeded`, `partial`, `failed`, `interrupted`.
    pub outcome: String,
    /// Free-form JSON summary (counts per action, errors).
    pub summary: serde_json::Value,
}

/// One audit line: an intent (before sending) or an outcome (after).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Sequence number, assigned by the store.
    #[serde(default)]
    pub seq: i64,
    /// Run id.
    pub run_id: String,
    /// When.
    pub time: DateTime<Utc>,
    /// `intent` (before a request is sent), `outcome` (after its answer, or its failure), or
    /// `refused` (a write decided not to be sent, with why; no intent before it).
    pub phase: String,
    /// `create`, `update`, `rename`, `remove`, `group_create`, ...
    pub action: String,
    /// userName (or group displayName).
    pub user_name: String,
    /// Source id, when known.
    pub source_id: Option<String>,
    /// Ironclad id, when known.
    pub ironclad_id: Option<String>,
    /// Managed attributes before.
    pub before: Option<serde_json::Value>,
    /// Managed attributes after.
    pub after: Option<serde_json::Value>,
    /// HTTP status of the outcome.
    pub http_status: Option<u16>,
    /// Request id sent with the write.
    pub request_id: Option<String>,
    /// Error text of a failed outcome (never a secret).
    pub error: Option<String>,
}

/// A quarantined source entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quarantine {
    /// Source id.
    pub source_id: String,
    /// Consecutive failed runs.
    pub failures: u32,
    /// Last error text.
    pub last_error: String,
    /// When it last failed.
    pub last_failed: DateTime<Utc>,
    /// Not retried before this time.
    pub retry_after: DateTime<Utc>,
}

/// Grace counter for someone missing or out of scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grace {
    /// Source id (or Ironclad id for users with no source entry any more).
    pub source_id: String,
    /// First run at which they were missing.
    pub first_missing: DateTime<Utc>,
    /// Consecutive runs missing.
    pub missed_runs: u32,
}

/// The state store. Cheap to share behind an `Arc`; calls are short and synchronous (SQLite
/// on local disk), guarded by a std `Mutex` that is never held across an `.await`.
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

/// What an applied write changes in the store beside its audit line (see
/// [`Store::audit_batch`]).
#[derive(Debug, Clone)]
pub enum AfterWrite {
    /// Only the audit line.
    Nothing,
    /// The object was written: its link is recorded (or moved); for a user, its failure record
    /// and grace counter are cleared.
    Linked(Link),
    /// The user (by source id) is gone: its link, converged fingerprint, grace counter and
    /// failure record are forgotten.
    Unlinked(String),
}

/// Records (or moves) a link inside `tx`: a link to the same Ironclad id under another source
/// id is replaced, so one Ironclad object is never linked twice. A link that already holds
/// these values is left as it is (`updated_at` is when it last changed), so re-confirming it
/// writes no page.
fn upsert_link(tx: &rusqlite::Transaction<'_>, link: &Link, now: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM links WHERE ironclad_id = ?1 AND source_id <> ?2")?
        .execute(params![link.ironclad_id, link.source_id])?;
    tx.prepare_cached(
        "INSERT INTO links (source_id, ironclad_id, user_name, kind, linked_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)
         ON CONFLICT(source_id) DO UPDATE SET ironclad_id = excluded.ironclad_id,
           user_name = excluded.user_name, kind = excluded.kind, updated_at = excluded.updated_at
         WHERE links.ironclad_id <> excluded.ironclad_id OR links.user_name <> excluded.user_name
           OR links.kind <> excluded.kind",
    )?
    .execute(params![
        link.source_id,
        link.ironclad_id,
        link.user_name,
        link.kind,
        now
    ])?;
    Ok(())
}

/// Deletes the rows of `source_id` from each of `tables` inside `tx`.
fn delete_rows(
    tx: &rusqlite::Transaction<'_>,
    tables: [&str; 2],
    source_id: &str,
) -> rusqlite::Result<()> {
    for table in tables {
        tx.prepare_cached(&format!("DELETE FROM {table} WHERE source_id = ?1"))?
            .execute(params![source_id])?;
    }
    Ok(())
}

/// Forgets a link and its converged fingerprint inside `tx`.
fn forget_link(tx: &rusqlite::Transaction<'_>, source_id: &str) -> rusqlite::Result<()> {
    delete_rows(tx, ["links", "converged"], source_id)
}

/// Clears a user's failure record and grace counter inside `tx`.
fn forget_user_state(tx: &rusqlite::Transaction<'_>, source_id: &str) -> rusqlite::Result<()> {
    delete_rows(tx, ["quarantine", "grace"], source_id)
}

impl Store {
    /// Opens (creating if needed) the store at `path`, in WAL mode, and migrates the schema.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let p = path.display().to_string();
        let err = |error| StoreError::Sqlite {
            path: p.clone(),
            error,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: p,
                found: version,
            });
        }
        conn.execute_batch(SCHEMA).map_err(err)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        Ok(Store {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut guard = match self.conn.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard).map_err(|error| StoreError::Sqlite {
            path: self.path.display().to_string(),
            error,
        })
    }

    fn json_err(&self, e: serde_json::Error) -> StoreError {
        StoreError::Json {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    // ---- links ----------------------------------------------------------------------------

    /// All links of a kind (`user` or `group`), by source id.
    pub fn links(&self, kind: &str) -> Result<BTreeMap<String, Link>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT source_id, ironclad_id, user_name, kind FROM links WHERE kind = ?1",
            )?;
            let rows = st.query_map(params![kind], |r| {
                Ok(Link {
                    source_id: r.get(0)?,
                    ironclad_id: r.get(1)?,
                    user_name: r.get(2)?,
                    kind: r.get(3)?,
                })
            })?;
            let mut out = BTreeMap::new();
            for l in rows {
                let l = l?;
                out.insert(l.source_id.clone(), l);
            }
            Ok(out)
        })
    }

    /// Every link of a kind as source id -> Ironclad id: what the planner needs of them,
    /// read without the rest.
    pub fn link_ids(&self, kind: &str) -> Result<foldhash::HashMap<String, String>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare("SELECT source_id, ironclad_id FROM links WHERE kind = ?1")?;
            let mut rows = st.query(params![kind])?;
            let mut out = foldhash::HashMap::default();
            while let Some(r) = rows.next()? {
                out.insert(r.get(0)?, r.get(1)?);
            }
            Ok(out)
        })
    }

    /// The Ironclad id linked to one source id, if any.
    pub fn linked_id(&self, kind: &str, source_id: &str) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT ironclad_id FROM links WHERE kind = ?1 AND source_id = ?2",
            )?;
            let mut rows = st.query(params![kind, source_id])?;
            Ok(match rows.next()? {
                Some(r) => Some(r.get(0)?),
                None => None,
            })
        })
    }

    /// Records (or moves) a link. A link to the same Ironclad id under another source id is
    /// replaced, so one Ironclad object is never linked twice.
    pub fn put_link(&self, link: &Link, now: DateTime<Utc>) -> Result<(), StoreError> {
        let now = ts(now);
        self.with(|c| {
            let tx = c.transaction()?;
            upsert_link(&tx, link, &now)?;
            tx.commit()
        })
    }

    /// Forgets a link (after the Ironclad object was removed), and its converged fingerprint.
    pub fn delete_link(&self, source_id: &str) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            forget_link(&tx, source_id)?;
            tx.commit()
        })
    }

    // ---- converged fingerprints -----------------------------------------------------------

    /// Every fingerprint recorded, without its source id: the planner only asks whether a
    /// fingerprint is among them (a fingerprint hashes everything its comparison reads, the
    /// Ironclad id included, so a match stands for that comparison whichever row holds it),
    /// and 100,000 source ids need not be read into memory.
    pub fn converged_fingerprints(&self) -> Result<foldhash::HashSet<[u8; 16]>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare("SELECT fingerprint FROM converged")?;
            let mut rows = st.query([])?;
            let mut out = foldhash::HashSet::default();
            while let Some(r) = rows.next()? {
                let fp: Vec<u8> = r.get(0)?;
                if let Ok(fp) = <[u8; 16]>::try_from(fp.as_slice()) {
                    out.insert(fp);
                }
            }
            Ok(out)
        })
    }

    /// The fingerprint recorded for each user a run found converged, by source id. Rows of
    /// another length than 16 bytes (written by something else) are ignored.
    pub fn converged(&self) -> Result<foldhash::HashMap<String, [u8; 16]>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare("SELECT source_id, fingerprint FROM converged")?;
            let mut rows = st.query([])?;
            let mut out = foldhash::HashMap::default();
            while let Some(r) = rows.next()? {
                let fp: Vec<u8> = r.get(1)?;
                if let Ok(fp) = <[u8; 16]>::try_from(fp.as_slice()) {
                    out.insert(r.get(0)?, fp);
                }
            }
            Ok(out)
        })
    }

    /// Records users found converged (one transaction), replacing their earlier fingerprints,
    /// and forgets fingerprints of source ids no longer linked.
    pub fn record_converged(&self, found: &[(String, [u8; 16])]) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare(
                    "INSERT INTO converged (source_id, fingerprint) VALUES (?1, ?2)
                     ON CONFLICT(source_id) DO UPDATE SET fingerprint = excluded.fingerprint",
                )?;
                for (id, fp) in found {
                    st.execute(params![id, &fp[..]])?;
                }
            }
            tx.execute(
                "DELETE FROM converged WHERE source_id NOT IN (SELECT source_id FROM links)",
                [],
            )?;
            tx.commit()
        })
    }

    // ---- runs -----------------------------------------------------------------------------

    /// Records a run as started.
    pub fn start_run(
        &self,
        id: &str,
        trigger: &str,
        mode: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO runs (id, trigger, mode, started_at, outcome) VALUES (?1, ?2, ?3, ?4, 'running')",
                params![id, trigger, mode, ts(now)],
            )
            .map(|_| ())
        })
    }

    /// Records a run's end.
    pub fn finish_run(
        &self,
        id: &str,
        outcome: &str,
        summary: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let s = serde_json::to_string(summary).map_err(|e| self.json_err(e))?;
        self.with(|c| {
            c.execute(
                "UPDATE runs SET outcome = ?2, summary = ?3, finished_at = ?4 WHERE id = ?1",
                params![id, outcome, s, ts(now)],
            )
            .map(|_| ())
        })
    }

    /// How many apply runs started after `t` (fixed-width UTC timestamps compare as text).
    pub fn applies_since(&self, t: DateTime<Utc>) -> Result<usize, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM runs WHERE mode = 'apply' AND started_at > ?1",
                params![ts(t)],
                |r| r.get::<_, i64>(0),
            )
        })
        .map(|n| usize::try_from(n).unwrap_or(0))
    }

    /// Marks every run still `running` as `interrupted` (at start-up, after a crash).
    pub fn mark_interrupted(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        self.with(|c| {
            // The end is when the run last wrote to the audit (else when it was found dead),
            // and the summary counts what the audit holds of it.
            c.execute(
                "UPDATE runs SET outcome = 'interrupted',
                    finished_at = COALESCE((SELECT max(time) FROM audit WHERE run_id = runs.id), ?1),
                    summary = json_object(
                        'note', 'the process stopped without finishing (killed, or the machine went down); the next run settled what it left',
                        'audit', json_object(
                            'intent', (SELECT count(*) FROM audit WHERE run_id = runs.id AND phase = 'intent'),
                            'outcome', (SELECT count(*) FROM audit WHERE run_id = runs.id AND phase = 'outcome'),
                            'refused', (SELECT count(*) FROM audit WHERE run_id = runs.id AND phase = 'refused')))
                 WHERE outcome = 'running'",
                params![ts(now)],
            )
        })
    }

    /// The most recent runs, newest first.
    pub fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let rows = self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, trigger, mode, started_at, finished_at, outcome, summary FROM runs
                 ORDER BY started_at DESC, rowid DESC LIMIT ?1",
            )?;
            let rows = st.query_map(params![limit as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                ))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(|(id, trigger, mode, started, finished, outcome, summary)| {
                Ok(RunRecord {
                    id,
                    trigger,
                    mode,
                    started_at: parse_ts(&started),
                    finished_at: finished.as_deref().map(parse_ts),
                    outcome,
                    summary: serde_json::from_str(&summary).map_err(|e| self.json_err(e))?,
                })
            })
            .collect()
    }

    /// One run by id.
    pub fn run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        let row = self.with(|c| {
            c.query_row(
                "SELECT id, trigger, mode, started_at, finished_at, outcome, summary FROM runs WHERE id = ?1",
                params![id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, String>(6)?,
                    ))
                },
            )
            .optional()
        })?;
        row.map(|(id, trigger, mode, started, finished, outcome, summary)| {
            Ok(RunRecord {
                id,
                trigger,
                mode,
                started_at: parse_ts(&started),
                finished_at: finished.as_deref().map(parse_ts),
                outcome,
                summary: serde_json::from_str(&summary).map_err(|e| self.json_err(e))?,
            })
        })
        .transpose()
    }

    /// Records a run that was due but did not happen (`skipped`), with the reason.
    pub fn record_skipped(
        &self,
        id: &str,
        trigger: &str,
        mode: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.start_run(id, trigger, mode, now)?;
        self.finish_run(id, "skipped", &serde_json::json!({ "reason": reason }), now)
    }

    /// Marks one run still `running` as `interrupted` (a stop cut it short); returns whether
    /// it was still running.
    pub fn interrupt_run(
        &self,
        id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let summary = serde_json::to_string(&serde_json::json!({ "error": reason }))
            .map_err(|e| self.json_err(e))?;
        self.with(|c| {
            c.execute(
                "UPDATE runs SET outcome = 'interrupted', finished_at = ?2, summary = ?3
                 WHERE id = ?1 AND outcome = 'running'",
                params![id, ts(now), summary],
            )
            .map(|n| n > 0)
        })
    }

    /// Keeps a run's plan (JSON, without the Ironclad objects it saw) for later reports.
    pub fn save_plan(&self, run_id: &str, plan: &serde_json::Value) -> Result<(), StoreError> {
        let s = serde_json::to_string(plan).map_err(|e| self.json_err(e))?;
        self.with(|c| {
            c.execute(
                "INSERT INTO run_reports (run_id, plan) VALUES (?1, ?2)
                 ON CONFLICT(run_id) DO UPDATE SET plan = excluded.plan",
                params![run_id, s],
            )
            .map(|_| ())
        })
    }

    /// A run's saved plan, if one was kept.
    pub fn plan(&self, run_id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let s: Option<String> = self.with(|c| {
            c.query_row(
                "SELECT plan FROM run_reports WHERE run_id = ?1",
                params![run_id],
                |r| r.get(0),
            )
            .optional()
        })?;
        s.map(|s| serde_json::from_str(&s).map_err(|e| self.json_err(e)))
            .transpose()
    }

    // ---- audit ----------------------------------------------------------------------------

    /// Appends an audit line, returning its sequence number.
    pub fn audit(&self, e: &AuditEntry) -> Result<i64, StoreError> {
        self.audit_batch(&[(e, &AfterWrite::Nothing)])
            .map(|seqs| seqs.last().copied().unwrap_or_default())
    }

    /// Appends audit lines, each with the change it describes (`AfterWrite`), all in one
    /// transaction: one commit for a batch of writes, and a line and its link never disagree
    /// after a crash. Returns each line's sequence number, in order.
    pub fn audit_batch(
        &self,
        lines: &[(&AuditEntry, &AfterWrite)],
    ) -> Result<Vec<i64>, StoreError> {
        let mut rows = Vec::with_capacity(lines.len());
        for (e, _) in lines {
            let json = |v: &Option<serde_json::Value>| {
                v.as_ref()
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(|x| self.json_err(x))
            };
            rows.push((json(&e.before)?, json(&e.after)?, ts(e.time)));
        }
        self.with(|c| {
            let tx = c.transaction()?;
            let mut seqs = Vec::with_capacity(lines.len());
            for ((e, then), (before, after, time)) in lines.iter().zip(&rows) {
                tx.prepare_cached(
                    "INSERT INTO audit (run_id, time, phase, action, user_name, source_id, ironclad_id, before, after,
                                        http_status, request_id, error)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )?
                .execute(params![
                    e.run_id,
                    time,
                    e.phase,
                    e.action,
                    e.user_name,
                    e.source_id,
                    e.ironclad_id,
                    before,
                    after,
                    e.http_status,
                    e.request_id,
                    e.error
                ])?;
                seqs.push(tx.last_insert_rowid());
                // A user create's intent stays pending until a line settles it, so a create
                // whose process died before its answer is found by the next run.
                if let ("create", Some(src)) = (e.action.as_str(), e.source_id.as_deref()) {
                    if e.phase == "intent" {
                        tx.prepare_cached(
                            "INSERT OR REPLACE INTO pending_creates (source_id, user_name, run_id)
                             VALUES (?1, ?2, ?3)",
                        )?
                        .execute(params![src, e.user_name, e.run_id])?;
                    } else {
                        tx.prepare_cached("DELETE FROM pending_creates WHERE source_id = ?1")?
                            .execute(params![src])?;
                    }
                }
                match then {
                    AfterWrite::Nothing => {}
                    AfterWrite::Linked(link) => {
                        upsert_link(&tx, link, time)?;
                        if link.kind == "user" {
                            forget_user_state(&tx, &link.source_id)?;
                        }
                    }
                    AfterWrite::Unlinked(source_id) => {
                        forget_link(&tx, source_id)?;
                        forget_user_state(&tx, source_id)?;
                    }
                }
            }
            tx.commit()?;
            Ok(seqs)
        })
    }

    /// The Ironclad tenant (SCIM URL) the store belongs to, once a run has used it.
    pub fn tenant(&self) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            c.query_row("SELECT value FROM meta WHERE key = 'tenant'", [], |r| {
                r.get(0)
            })
            .optional()
        })
    }

    /// Ties the store to the Ironclad tenant at `scim_url` on first use, and refuses another:
    /// its links, fingerprints and pending creates are that tenant's Ironclad ids.
    pub fn bind_tenant(&self, scim_url: &str) -> Result<(), StoreError> {
        let wanted = scim_url.trim_end_matches('/').to_string();
        let bound: Option<String> = self.with(|c| {
            let tx = c.transaction()?;
            let bound: Option<String> = tx
                .query_row("SELECT value FROM meta WHERE key = 'tenant'", [], |r| {
                    r.get(0)
                })
                .optional()?;
            if bound.is_none() {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('tenant', ?1)",
                    params![wanted],
                )?;
            }
            tx.commit()?;
            Ok(bound)
        })?;
        match bound {
            Some(b) if !b.eq_ignore_ascii_case(&wanted) => Err(StoreError::OtherTenant {
                path: self.path.display().to_string(),
                bound: b,
                wanted,
            }),
            _ => Ok(()),
        }
    }

    /// User creates whose intent was recorded but no outcome: the process stopped before
    /// the answer (kill -9, power loss). Source id -> (userName, run id).
    pub fn pending_creates(&self) -> Result<BTreeMap<String, (String, String)>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare("SELECT source_id, user_name, run_id FROM pending_creates")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?;
            rows.collect()
        })
    }

    /// The audit lines of a run (or all runs), in order.
    pub fn audit_lines(&self, run_id: Option<&str>) -> Result<Vec<AuditEntry>, StoreError> {
        type Row = (
            i64,
            String,
            String,
            String,
            String,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<u16>,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Row> = self.with(|c| {
            let mut st = c.prepare(
                "SELECT seq, run_id, time, phase, action, user_name, source_id, ironclad_id, before, after,
                        http_status, request_id, error
                 FROM audit WHERE (?1 IS NULL OR run_id = ?1) ORDER BY seq",
            )?;
            let rows = st.query_map(params![run_id], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                    r.get(11)?,
                    r.get(12)?,
                ))
            })?;
            rows.collect()
        })?;
        let parse = |s: Option<String>| -> Result<Option<serde_json::Value>, StoreError> {
            s.map(|s| serde_json::from_str(&s).map_err(|e| self.json_err(e)))
                .transpose()
        };
        rows.into_iter()
            .map(
                |(
                    seq,
                    run_id,
                    time,
                    phase,
                    action,
                    user_name,
                    source_id,
                    ironclad_id,
                    b,
                    a,
                    st,
                    rid,
                    err,
                )| {
                    Ok(AuditEntry {
                        seq,
                        run_id,
                        time: parse_ts(&time),
                        phase,
                        action,
                        user_name,
                        source_id,
                        ironclad_id,
                        before: parse(b)?,
                        after: parse(a)?,
                        http_status: st,
                        request_id: rid,
                        error: err,
                    })
                },
            )
            .collect()
    }

    // ---- quarantine -----------------------------------------------------------------------

    /// Records a failure; returns the updated entry. `backoff` gives the delay before the next
    /// attempt from the failure count.
    pub fn record_failure(
        &self,
        source_id: &str,
        error: &str,
        now: DateTime<Utc>,
        backoff: impl Fn(u32) -> chrono::Duration,
    ) -> Result<Quarantine, StoreError> {
        let failures: u32 = self
            .with(|c| {
                c.query_row(
                    "SELECT failures FROM quarantine WHERE source_id = ?1",
                    params![source_id],
                    |r| r.get(0),
                )
                .optional()
            })?
            .unwrap_or(0)
            + 1;
        let q = Quarantine {
            source_id: source_id.to_string(),
            failures,
            last_error: error.to_string(),
            last_failed: now,
            retry_after: now + backoff(failures),
        };
        self.with(|c| {
            c.execute(
                "INSERT INTO quarantine (source_id, failures, last_error, last_failed, retry_after)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(source_id) DO UPDATE SET failures = excluded.failures, last_error = excluded.last_error,
                   last_failed = excluded.last_failed, retry_after = excluded.retry_after",
                params![q.source_id, q.failures, q.last_error, ts(q.last_failed), ts(q.retry_after)],
            )
            .map(|_| ())
        })?;
        Ok(q)
    }

    /// Clears a user's failure record after a success.
    pub fn clear_failure(&self, source_id: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM quarantine WHERE source_id = ?1",
                params![source_id],
            )
            .map(|_| ())
        })
    }

    /// Every failure record, by source id.
    pub fn quarantine(&self) -> Result<BTreeMap<String, Quarantine>, StoreError> {
        let rows: Vec<(String, u32, String, String, String)> = self.with(|c| {
            let mut st = c.prepare(
                "SELECT source_id, failures, last_error, last_failed, retry_after FROM quarantine",
            )?;
            let rows = st.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?;
            rows.collect()
        })?;
        Ok(rows
            .into_iter()
            .map(|(s, f, e, l, r)| {
                (
                    s.clone(),
                    Quarantine {
                        source_id: s,
                        failures: f,
                        last_error: e,
                        last_failed: parse_ts(&l),
                        retry_after: parse_ts(&r),
                    },
                )
            })
            .collect())
    }

    // ---- grace ----------------------------------------------------------------------------

    /// Counts one more run in which `source_id` was missing; returns the counter.
    pub fn bump_grace(&self, source_id: &str, now: DateTime<Utc>) -> Result<Grace, StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO grace (source_id, first_missing, missed_runs) VALUES (?1, ?2, 1)
                 ON CONFLICT(source_id) DO UPDATE SET missed_runs = missed_runs + 1",
                params![source_id, ts(now)],
            )?;
            c.query_row(
                "SELECT first_missing, missed_runs FROM grace WHERE source_id = ?1",
                params![source_id],
                |r| {
                    Ok(Grace {
                        source_id: source_id.to_string(),
                        first_missing: parse_ts(&r.get::<_, String>(0)?),
                        missed_runs: r.get(1)?,
                    })
                },
            )
        })
    }

    /// Forgets a grace counter (the person is back, or was removed).
    pub fn clear_grace(&self, source_id: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute("DELETE FROM grace WHERE source_id = ?1", params![source_id])
                .map(|_| ())
        })
    }

    /// Every grace counter, by source id.
    pub fn grace(&self) -> Result<BTreeMap<String, Grace>, StoreError> {
        let rows: Vec<(String, String, u32)> = self.with(|c| {
            let mut st = c.prepare("SELECT source_id, first_missing, missed_runs FROM grace")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })?;
        Ok(rows
            .into_iter()
            .map(|(s, f, m)| {
                (
                    s.clone(),
                    Grace {
                        source_id: s,
                        first_missing: parse_ts(&f),
                        missed_runs: m,
                    },
                )
            })
            .collect())
    }

    // ---- run lock -------------------------------------------------------------------------

    /// Takes the single-instance run lock for `holder`. A lock whose heartbeat is older than
    /// `stale_after` is taken over (its holder died). Fails with [`StoreError::Locked`] otherwise.
    pub fn try_lock(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        stale_after: chrono::Duration,
    ) -> Result<(), StoreError> {
        let cutoff = ts(now - stale_after);
        let current: Option<(String, String)> = self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let cur: Option<(String, String, String)> = tx
                .query_row("SELECT holder, acquired_at, heartbeat FROM run_lock WHERE id = 1", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            let blocked = match &cur {
                Some((h, since, beat)) if h != holder && beat.as_str() > cutoff.as_str() => {
                    Some((h.clone(), since.clone()))
                }
                _ => None,
            };
            if blocked.is_none() {
                tx.execute(
                    "INSERT INTO run_lock (id, holder, acquired_at, heartbeat) VALUES (1, ?1, ?2, ?2)
                     ON CONFLICT(id) DO UPDATE SET holder = excluded.holder, acquired_at = excluded.acquired_at,
                       heartbeat = excluded.heartbeat",
                    params![holder, ts(now)],
                )?;
            }
            tx.commit()?;
            Ok(blocked)
        })?;
        match current {
            None => Ok(()),
            Some((holder, since)) => Err(StoreError::Locked {
                path: self.path.display().to_string(),
                holder,
                since,
            }),
        }
    }

    /// Refreshes the lock's heartbeat (call during long runs).
    pub fn heartbeat(&self, holder: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE run_lock SET heartbeat = ?2 WHERE id = 1 AND holder = ?1",
                params![holder, ts(now)],
            )
            .map(|_| ())
        })
    }

    /// Releases the lock if `holder` has it.
    pub fn unlock(&self, holder: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM run_lock WHERE id = 1 AND holder = ?1",
                params![holder],
            )
            .map(|_| ())
        })
    }

    /// Refreshes `holder`'s heartbeat every `every` until the returned task is aborted (a
    /// failed refresh is logged; the next one tries again). Needs a Tokio runtime.
    pub fn spawn_heartbeat(
        self: &std::sync::Arc<Self>,
        holder: String,
        every: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = store.heartbeat(&holder, Utc::now()) {
                    tracing::warn!(error = %e, "cannot refresh the run lock");
                }
            }
        })
    }
}

/// This host's name for run-lock holders: `$HOSTNAME`, else `/etc/hostname`, else
/// `ironbridge`.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ironbridge".into())
}

/// The run-lock holder name of this process: `host:pid:tag`.
pub fn lock_holder(tag: &str) -> String {
    format!("{}:{}:{tag}", host_name(), std::process::id())
}

/// Whether `holder` (a [`lock_holder`] name) belongs to a process on this host that no longer
/// exists: its lock can be taken over at once instead of after the stale period.
pub fn holder_is_dead(holder: &str) -> bool {
    let mut parts = holder.split(':');
    parts.next() == Some(host_name().as_str())
        && parts
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("state.db")).unwrap();
        (dir, s)
    }

    #[test]
    fn links_round_trip_and_never_double_link() {
        let (_d, s) = store();
        let now = Utc::now();
        let l = |src: &str, id: &str| Link {
            source_id: src.into(),
            ironclad_id: id.into(),
            user_name: "a@example.com".into(),
            kind: "user".into(),
        };
        s.put_link(&l("s1", "i1"), now).unwrap();
        s.put_link(&l("s2", "i1"), now).unwrap();
        let links = s.links("user").unwrap();
        assert_eq!(links.len(), 1);
        assert_eq!(links["s2"].ironclad_id, "i1");
        s.delete_link("s2").unwrap();
        assert!(s.links("user").unwrap().is_empty());
    }

    #[test]
    fn an_audit_batch_records_lines_and_links_together() {
        let (_d, s) = store();
        let t0 = Utc::now() - chrono::Duration::hours(1);
        let link = |src: &str, id: &str| Link {
            source_id: src.into(),
            ironclad_id: id.into(),
            user_name: format!("{src}@x"),
            kind: "user".into(),
        };
        s.put_link(&link("s1", "i1"), t0).unwrap();
        s.put_link(&link("s2", "i2"), t0).unwrap();
        s.record_converged(&[("s2".into(), [2; 16])]).unwrap();
        s.record_failure("s1", "boom", t0, |_| chrono::Duration::zero())
            .unwrap();
        s.bump_grace("s1", t0).unwrap();
        s.bump_grace("s2", t0).unwrap();
        s.put_link(&link("s3", "i3"), t0).unwrap();
        let line = |phase: &str, src: &str| AuditEntry {
            seq: 0,
            run_id: "r1".into(),
            time: Utc::now(),
            phase: phase.into(),
            action: "update".into(),
            user_name: format!("{src}@x"),
            source_id: Some(src.into()),
            ironclad_id: None,
            before: None,
            after: Some(serde_json::json!({"title": "New"})),
            http_status: None,
            request_id: None,
            error: None,
        };
        let (intent, linked, gone, same) = (
            line("intent", "s1"),
            line("outcome", "s1"),
            line("outcome", "s2"),
            line("outcome", "s3"),
        );
        let (l1, l3) = (link("s1", "i1-new"), link("s3", "i3"));
        let seqs = s
            .audit_batch(&[
                (&intent, &AfterWrite::Nothing),
                (&linked, &AfterWrite::Linked(l1)),
                (&gone, &AfterWrite::Unlinked("s2".into())),
                (&same, &AfterWrite::Linked(l3)),
            ])
            .unwrap();
        let lines = s.audit_lines(Some("r1")).unwrap();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines.iter().map(|l| l.seq).collect::<Vec<_>>(), seqs);
        assert_eq!(lines[0].after, Some(serde_json::json!({"title": "New"})));
        let links = s.links("user").unwrap();
        assert_eq!(links["s1"].ironclad_id, "i1-new");
        assert!(!links.contains_key("s2"));
        assert!(s.converged().unwrap().is_empty());
        assert!(s.quarantine().unwrap().is_empty());
        assert!(s.grace().unwrap().is_empty());
        // A link confirmed with the values it holds is not rewritten.
        let updated = |src: &str| -> String {
            s.with(|c| {
                c.query_row(
                    "SELECT updated_at FROM links WHERE source_id = ?1",
                    params![src],
                    |r| r.get(0),
                )
            })
            .unwrap()
        };
        assert_eq!(updated("s3"), ts(t0));
        assert_ne!(updated("s1"), ts(t0));
    }

    #[test]
    fn a_store_belongs_to_the_first_tenant_it_is_used_with() {
        let (_d, s) = store();
        s.bind_tenant("https://na1.ironcladapp.com/scim/v2")
            .unwrap();
        s.bind_tenant("https://NA1.ironcladapp.com/scim/v2/")
            .unwrap();
        let e = s
            .bind_tenant("http://127.0.0.1:8080/scim/v2")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("belongs to the Ironclad tenant at https://na1.ironcladapp.com/scim/v2")
                && e.contains("points at http://127.0.0.1:8080/scim/v2"),
            "{e}"
        );
    }

    #[test]
    fn a_create_intent_stays_pending_until_a_line_settles_it() {
        let (_d, s) = store();
        let line = |phase: &str, action: &str, src: &str| AuditEntry {
            seq: 0,
            run_id: "r1".into(),
            time: Utc::now(),
            phase: phase.into(),
            action: action.into(),
            user_name: format!("{src}@x"),
            source_id: Some(src.into()),
            ironclad_id: None,
            before: None,
            after: None,
            http_status: None,
            request_id: None,
            error: None,
        };
        for l in [
            line("intent", "create", "s1"),
            line("intent", "create", "s2"),
            line("intent", "create", "s3"),
            line("intent", "update", "s4"),
            line("outcome", "create", "s2"),
            line("refused", "create", "s3"),
        ] {
            s.audit(&l).unwrap();
        }
        let pending = s.pending_creates().unwrap();
        assert_eq!(pending.keys().collect::<Vec<_>>(), vec!["s1"]);
        assert_eq!(pending["s1"], ("s1@x".to_string(), "r1".to_string()));
        s.audit(&line("outcome", "create", "s1")).unwrap();
        assert!(s.pending_creates().unwrap().is_empty());
    }

    #[test]
    fn converged_fingerprints_follow_the_links() {
        let (_d, s) = store();
        let now = Utc::now();
        for src in ["s1", "s2"] {
            let link = Link {
                source_id: src.into(),
                ironclad_id: format!("i-{src}"),
                user_name: format!("{src}@x"),
                kind: "user".into(),
            };
            s.put_link(&link, now).unwrap();
        }
        // A fingerprint of a source id with no link is not kept.
        s.record_converged(&[
            ("s1".into(), [1; 16]),
            ("s2".into(), [2; 16]),
            ("gone".into(), [3; 16]),
        ])
        .unwrap();
        let got = s.converged().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got["s1"], [1; 16]);
        s.record_converged(&[("s1".into(), [9; 16])]).unwrap();
        assert_eq!(s.converged().unwrap()["s1"], [9; 16]);
        s.delete_link("s2").unwrap();
        assert_eq!(
            s.converged().unwrap().keys().collect::<Vec<_>>(),
            vec!["s1"]
        );
    }

    #[test]
    fn runs_and_audit_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let now = Utc::now();
        {
            let s = Store::open(&path).unwrap();
            s.start_run("r1", "cli", "apply", now).unwrap();
            s.audit(&AuditEntry {
                seq: 0,
                run_id: "r1".into(),
                time: now,
                phase: "intent".into(),
                action: "create".into(),
                user_name: "a@example.com".into(),
                source_id: Some("s1".into()),
                ironclad_id: None,
                before: None,
                after: Some(serde_json::json!({"title": "x"})),
                http_status: None,
                request_id: Some("req".into()),
                error: None,
            })
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let later = now + chrono::Duration::minutes(5);
        assert_eq!(s.mark_interrupted(later).unwrap(), 1);
        let run = &s.runs(10).unwrap()[0];
        assert_eq!(run.outcome, "interrupted");
        // Ended at its last audit line, not when it was found dead; what it wrote is counted.
        assert_eq!(
            run.finished_at.map(|t| t.timestamp()),
            Some(now.timestamp())
        );
        assert_eq!(run.summary["audit"]["intent"], 1, "{:?}", run.summary);
        assert_eq!(run.summary["audit"]["outcome"], 0);
        let lines = s.audit_lines(Some("r1")).unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].after, Some(serde_json::json!({"title": "x"})));
    }

    #[test]
    fn quarantine_counts_and_clears() {
        let (_d, s) = store();
        let now = Utc::now();
        let backoff = |n: u32| chrono::Duration::minutes(5 * i64::from(n));
        s.record_failure("s1", "boom", now, backoff).unwrap();
        let q = s.record_failure("s1", "boom again", now, backoff).unwrap();
        assert_eq!(q.failures, 2);
        assert_eq!(q.retry_after, now + chrono::Duration::minutes(10));
        s.clear_failure("s1").unwrap();
        assert!(s.quarantine().unwrap().is_empty());
    }

    #[test]
    fn grace_counts_runs() {
        let (_d, s) = store();
        let now = Utc::now();
        s.bump_grace("s1", now).unwrap();
        assert_eq!(s.bump_grace("s1", now).unwrap().missed_runs, 2);
        s.clear_grace("s1").unwrap();
        assert!(s.grace().unwrap().is_empty());
    }

    #[test]
    fn skipped_interrupted_and_plans_are_kept() {
        let (_d, s) = store();
        let now = Utc::now();
        s.record_skipped("r1", "schedule", "apply", "r0 still going", now)
            .unwrap();
        let r = s.run("r1").unwrap().unwrap();
        assert_eq!(r.outcome, "skipped");
        assert_eq!(r.summary["reason"], "r0 still going");
        s.start_run("r2", "api", "apply", now).unwrap();
        assert!(s.interrupt_run("r2", "stopped", now).unwrap());
        assert!(!s.interrupt_run("r2", "stopped", now).unwrap());
        assert_eq!(s.run("r2").unwrap().unwrap().outcome, "interrupted");
        assert!(s.run("nope").unwrap().is_none());
        s.save_plan("r2", &serde_json::json!({"users": []}))
            .unwrap();
        assert_eq!(
            s.plan("r2").unwrap().unwrap()["users"],
            serde_json::json!([])
        );
        assert!(s.plan("r1").unwrap().is_none());
    }

    #[test]
    fn second_instance_is_locked_out_until_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let a = Store::open(&path).unwrap();
        let b = Store::open(&path).unwrap();
        let now = Utc::now();
        a.try_lock("a", now, chrono::Duration::seconds(60)).unwrap();
        assert!(matches!(
            b.try_lock("b", now, chrono::Duration::seconds(60)),
            Err(StoreError::Locked { .. })
        ));
        b.try_lock(
            "b",
            now + chrono::Duration::seconds(61),
            chrono::Duration::seconds(60),
        )
        .unwrap();
        a.unlock("a").unwrap();
        b.unlock("b").unwrap();
        a.try_lock("a", now, chrono::Duration::seconds(60)).unwrap();
    }
}
