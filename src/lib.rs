//! ironbridge keeps Ironclad CLM's users and groups in step with a company directory.
//!
//! A reconciliation is one straight line, and the modules read like it:
//!
//! ```text
//! source (LDAP | SCIM | LDIF) -> mapping -> desired state -> correlate with Ironclad snapshot
//!     -> plan (pure) -> report (dry run) | apply (writes, rate limited) -> audit + state
//! ```
//!
//! # Layout
//! - [`config`]: the versioned TOML configuration file, secrets from env/files, validation with
//!   file:line:column errors.
//! - [`ironclad`]: the Ironclad CLM client: OAuth token cache, SCIM requests, paging, retries,
//!   per-bucket pacing. It translates; it never decides what should happen.
//! - [`model`]: the source-neutral model of directory entries every source yields.
//! - [`source`]: directory sources (LDAP, SCIM 2.0, LDIF) producing complete snapshots.
//! - [`mapping`]: mapping files: scope rules, correlation, attribute expressions, groups, removal.
//! - [`reconcile`]: the pure planner and its safety rules, apply in fixed phases, the engine
//!   every trigger calls.
//! - [`report`]: text, JSON, Markdown, CSV and HTML renderings of a plan.
//! - [`store`]: the SQLite state store: links, runs, audit, quarantine, grace, run lock.
//! - [`check`]: what the configuration needs from Ironclad against what was granted.
//! - [`sim`]: `ironclad-sim`, an HTTP simulator of Ironclad's SCIM and OAuth APIs.
//! - [`serve`]: `ironbridge serve`: scheduler, IdP webhooks, admin API, health and metrics
//!   around the one engine.
//! - [`cli`]: the `ironbridge` command line: subcommands and their exit codes.
//!
//! What does not live here: process start-up (`src/main.rs`, `src/bin/ironclad-sim.rs` only
//! parse arguments and call into this library).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod check;
pub mod cli;
pub mod config;
pub mod ironclad;
pub mod mapping;
pub mod model;
pub(crate) mod pos_table;
pub mod reconcile;
pub mod report;
pub mod serve;
pub mod sim;
pub mod source;
pub mod store;
