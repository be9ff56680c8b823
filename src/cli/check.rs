//! `ironbridge check`: gets a token, lists the granted scopes, probes read access, checks the
//! source, and prints what the configuration needs against what was granted. Exit 0 when
//! everything the configuration needs is granted and reachable, 1 otherwise, naming what to fix.

use super::Exit;
use crate::check::{advice, missing, render_table, scope_rows, scopes, Effective};
use crate::config::Config;
use crate::ironclad::http::ApiRequest;
use crate::ironclad::{IroncladClient, IroncladError, ScopeSource};
use crate::mapping::Mapping;
use std::collections::BTreeSet;
use std::path::Path;

/// Runs the check, printing to stdout.
pub async fn run(config: &Path) -> anyhow::Result<Exit> {
    let cfg = Config::load(config)?;
    let mut ok = true;
    println!("Ironclad: {}", cfg.ironclad.scim_url);
    // The state store, if there is one already: it must belong to this tenant (it is only
    // read here; a run records the tenant on first use).
    if cfg.state_path.is_file() {
        let here = cfg.ironclad.scim_url.as_str().trim_end_matches('/');
        match crate::store::Store::open(&cfg.state_path).and_then(|s| s.tenant()) {
            Ok(Some(t)) if !t.eq_ignore_ascii_case(here) => {
                ok = false;
                println!(
                    "state store: FAILED: {} belongs to the Ironclad tenant at {t}, not {here}: \
                     give this tenant a state store of its own ([state] path)",
                    cfg.state_path.display()
                );
            }
            Ok(_) => println!("state store: ok ({})", cfg.state_path.display()),
            Err(e) => {
                ok = false;
                println!("state store: FAILED: {e}");
            }
        }
    }
    let client = IroncladClient::new(&cfg.ironclad)?;
    let granted = match client.granted_scopes().await {
        Ok(g) => {
            let from = match g.source {
                ScopeSource::TokenResponse => "the token response",
                ScopeSource::Userinfo => "/oauth/userinfo",
                ScopeSource::Configured => "the configuration (the server did not say)",
            };
            println!(
                "token: ok; granted scopes (from {from}): {}",
                g.scopes.join(" ")
            );
            g.scopes.into_iter().collect::<BTreeSet<String>>()
        }
        Err(e) => {
            println!("token: FAILED: {e}");
            return Ok(Exit::Error);
        }
    };
    for (what, path, scope) in [
        ("users", "/Users", scopes::READ_USERS),
        ("groups", "/Groups", scopes::READ_GROUPS),
    ] {
        if !granted.contains(scope) {
            println!("read {what}: not probed ({scope} not granted)");
            continue;
        }
        match probe(&client, path).await {
            Ok(total) => println!("read {what}: ok ({total} in Ironclad)"),
            Err(e) => {
                ok = false;
                println!("read {what}: FAILED: {e}");
            }
        }
    }
    println!();
    // The mapping's [removal] action and its groups decide what a run needs, as in a run.
    let (eff, removal_in_mapping) = match cfg.mapping.as_deref().map(Mapping::load) {
        Some(Ok(m)) => (
            Effective {
                remove_users: m.removal().action.unwrap_or(cfg.policy.remove_users),
                manage_groups: cfg.policy.manage_groups && m.manages_groups(),
            },
            m.removal().action.is_some(),
        ),
        Some(Err(e)) => {
            ok = false;
            println!("mapping: FAILED: {e}");
            (Effective::of_policy(&cfg.policy), false)
        }
        None => (Effective::of_policy(&cfg.policy), false),
    };
    let rows = scope_rows(&cfg.policy, eff, &granted);
    print!("{}", render_table(&rows));
    let lacking = missing(&rows);
    println!("\n{}", advice(&cfg.policy, removal_in_mapping, &lacking));
    if !lacking.is_empty() {
        ok = false;
    }
    if let Some(source) = &cfg.source {
        println!();
        match super::source::check_source(source, &cfg).await {
            Ok(lines) => {
                for l in lines {
                    println!("{l}");
                }
            }
            Err(e) => {
                ok = false;
                println!("source: FAILED: {e}");
            }
        }
    }
    Ok(if ok { Exit::Ok } else { Exit::Error })
}

/// `GET {path}?count=1`: proves read access and returns `totalResults`.
async fn probe(client: &IroncladClient, path: &str) -> Result<u64, IroncladError> {
    let resp = client
        .http()
        .send(&ApiRequest::get(path).query("count", "1"))
        .await?;
    Ok(resp
        .body
        .as_ref()
        .and_then(|b| b.get("totalResults"))
        .and_then(|t| t.as_u64())
        .unwrap_or(0))
}
