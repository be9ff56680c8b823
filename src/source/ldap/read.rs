//! One full read: users and groups (with ranged membership follow-ups) searched at the same
//! time on two connections, then in-chain searches, then membership resolved to ids. The whole read restarts on a new connection
//! when the connection drops (bounded by `max_reconnects`); any other failure ends it. Either
//! a complete [`Snapshot`] comes out or an error, never what was gathered so far, unless the
//! caller allows a partial read: then a users search ended by the server's size or time limit
//! keeps the users read, with the limit's error beside them.
//!
//! Entries are converted into the model as they arrive, so memory holds the model plus, per
//! group, the member references still to resolve.
//!
//! What does not live here: connection and search mechanics (see `super::conn`), value
//! conversions (see `super::entry`).

use super::config::Membership;
use super::conn::{self, Conn, Search};
use super::entry::{convert_value, id_text, normalize_dn, split_range, to_attributes, RawEntry};
use super::error::{LdapError, SearchKind};
use super::LdapSource;
use crate::model::{Entry, Group, Snapshot, Value};
use crate::pos_table::PosTable;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Reads a complete snapshot, restarting on dropped connections as configured. With
/// `allow_partial`, a users search cut short by a size or time limit gives what it read and
/// the error.
pub(crate) async fn read_snapshot(
    src: &LdapSource,
    allow_partial: bool,
) -> Result<(Snapshot, Option<LdapError>), LdapError> {
    src.warn_if_insecure();
    let max = src.cfg.max_reconnects;
    let mut attempt = 0u32;
    loop {
        match read_once(src, attempt, allow_partial).await {
            Ok(s) => return Ok(s),
            Err(e) if e.is_transient() => {
                if attempt >= max {
                    return Err(LdapError::ConnectionDropped {
                        url: src.cfg.url.clone(),
                        reconnects: attempt,
                        reason: match e {
                            LdapError::Transient { reason, .. } => reason,
                            other => other.to_string(),
                        },
                    });
                }
                attempt += 1;
                let delay = Duration::from_millis(200u64 << (attempt - 1).min(5));
                tracing::warn!(
                    url = %src.cfg.url,
                    error = %e,
                    attempt,
                    max_reconnects = max,
                    "LDAP connection lost mid-read; discarding what was read and restarting the whole read"
                );
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A group as read, before its member references are resolved.
struct PendingGroup {
    entry: Entry,
    /// Lower-cased membership attribute name still to be completed by range reads, and the
    /// next range start.
    next_range: Option<(String, u64)>,
}

/// Lower-cased stable id of a raw entry.
fn take_id(raw: &RawEntry, id_attr: &str, kind: SearchKind) -> Result<String, LdapError> {
    raw.attrs
        .iter()
        .find(|a| a.desc.eq_ignore_ascii_case(id_attr) && !a.values.is_empty())
        .and_then(|a| a.values.first().map(|b| id_text(a.desc, b)))
        .ok_or_else(|| LdapError::MissingId {
            search: kind,
            dn: raw.dn.to_string(),
            attribute: id_attr.to_string(),
        })
}

/// Adds `extra` names to a requested attribute list unless already present.
pub(crate) fn with_attrs(base: &[String], extra: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = if base.is_empty() {
        vec!["*".to_string()]
    } else {
        base.to_vec()
    };
    for e in extra {
        if !out.iter().any(|a| a.eq_ignore_ascii_case(e)) {
            out.push((*e).to_string());
        }
    }
    out
}

async fn read_once(
    src: &LdapSource,
    attempt: u32,
    allow_partial: bool,
) -> Result<(Snapshot, Option<LdapError>), LdapError> {
    let started = Instant::now();
    let read_at = chrono::Utc::now();
    let cfg = &src.cfg;
    let id_attr = cfg.id_attribute().to_string();
    let users_filter = cfg.users_filter().to_string();
    // Users and groups are read at the same time on two connections: the server prepares
    // both answers in parallel, and the two conversions overlap with each other's waits.
    let mut conn = conn::open(&src.settings, attempt == 0).await?;
    let (users, groups) = if cfg.groups.is_some() {
        let mut group_conn = conn::open(&src.settings, attempt == 0).await?;
        let both = tokio::try_join!(
            read_users(src, &mut conn, &id_attr, &users_filter, allow_partial),
            read_groups(src, &mut group_conn, &id_attr)
        );
        group_conn.close().await;
        both?
    } else {
        (
            read_users(src, &mut conn, &id_attr, &users_filter, allow_partial).await?,
            Vec::new(),
        )
    };

    // In-chain membership (Active Directory): the server flattens nesting for us.
    let mut in_chain: HashMap<usize, Vec<String>> = HashMap::new();
    if cfg.ad_in_chain {
        for (i, g) in groups.iter().enumerate() {
            let filter = format!(
                "(&{}(memberOf:1.2.840.113556.1.4.1941:={}))",
                users_filter,
                ldap3::ldap_escape(&g.entry.locator)
            );
            let attrs = vec![id_attr.clone()];
            let search = Search {
                kind: SearchKind::InChain,
                base: &cfg.users.base_dn,
                scope: cfg.users.scope.to_ldap(),
                filter: &filter,
                attrs: &attrs,
                paged: true,
            };
            let mut found = Vec::new();
            conn.search(&search, |raw| {
                found.push(take_id(&raw, &id_attr, SearchKind::InChain)?);
                Ok(())
            })
            .await?;
            in_chain.insert(i, found);
        }
    }
    conn.close().await;

    check_unique(&users, &groups, &id_attr)?;
    let groups = resolve_membership(src, &users, groups, in_chain);
    let cut_short = users.cut_short;
    let users = users.entries;
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match &cut_short {
        None => tracing::info!(
            url = %cfg.url,
            users = users.len(),
            groups = groups.len(),
            elapsed_ms,
            "LDAP read complete"
        ),
        Some(e) => tracing::warn!(
            url = %cfg.url,
            users = users.len(),
            groups = groups.len(),
            elapsed_ms,
            error = %e,
            "LDAP read INCOMPLETE: the users search was cut short; the users read are kept (policy.writes_on_incomplete_source) and nobody is removed"
        ),
    }
    Ok((
        Snapshot {
            source: src.describe_url(),
            read_at,
            users,
            groups,
        },
        cut_short,
    ))
}

/// The users as read, with tables of their ids and DNs (as written) built as they arrived,
/// while the server was preparing the next ones.
struct Users {
    entries: Vec<Entry>,
    by_id: PosTable,
    by_dn: PosTable,
    /// The size or time limit that ended the search early (partial reads only).
    cut_short: Option<LdapError>,
}

fn id_at(users: &[Entry], pos: u32) -> &str {
    users.get(pos as usize).map_or("", |e| e.id.as_str())
}

fn dn_at(users: &[Entry], pos: u32) -> &str {
    users.get(pos as usize).map_or("", |e| e.locator.as_str())
}

/// The users search, converted into entries as they arrive. A repeated id is an error at once.
/// With `allow_partial`, a size or time limit reached after at least one user keeps the users.
async fn read_users(
    src: &LdapSource,
    conn: &mut Conn,
    id_attr: &str,
    users_filter: &str,
    allow_partial: bool,
) -> Result<Users, LdapError> {
    let cfg = &src.cfg;
    let mut user_extra: Vec<&str> = vec![id_attr];
    match cfg.groups.as_ref().map(|g| g.membership) {
        Some(Membership::MemberOf) => user_extra.push("memberOf"),
        Some(Membership::MemberUid) => user_extra.push("uid"),
        _ => {}
    }
    let user_attrs = with_attrs(&cfg.users.attributes, &user_extra);
    let mut users: Vec<Entry> = Vec::new();
    let mut by_id = PosTable::with_capacity(1024);
    let mut by_dn = PosTable::with_capacity(1024);
    let search = Search {
        kind: SearchKind::Users,
        base: &cfg.users.base_dn,
        scope: cfg.users.scope.to_ldap(),
        filter: users_filter,
        attrs: &user_attrs,
        paged: true,
    };
    let searched = conn
        .search(&search, |raw| {
            let id = take_id(&raw, id_attr, SearchKind::Users)?;
            let (attrs, _) = to_attributes(&raw.attrs);
            let pos = users.len();
            users.push(Entry {
                id,
                locator: raw.dn.to_string(),
                attrs,
            });
            let Some(entry) = users.get(pos) else {
                return Ok(());
            };
            if let Some(first) = by_id.insert_first(&entry.id, pos, |p| id_at(&users, p)) {
                // The read fails, so the entry just added is discarded with the rest.
                return Err(LdapError::DuplicateId {
                    attribute: id_attr.to_string(),
                    id: entry.id.clone(),
                    first: users
                        .get(first)
                        .map_or_else(String::new, |e| e.locator.clone()),
                    second: entry.locator.clone(),
                });
            }
            by_dn.insert_first(&entry.locator, pos, |p| dn_at(&users, p));
            Ok(())
        })
        .await;
    let cut_short = match searched {
        Ok(_) => None,
        Err(e @ (LdapError::SizeLimit { .. } | LdapError::TimeLimit { .. }))
            if allow_partial && !users.is_empty() =>
        {
            Some(e)
        }
        Err(e) => return Err(e),
    };
    Ok(Users {
        entries: users,
        by_id,
        by_dn,
        cut_short,
    })
}

/// The groups search and, for groups whose membership came in ranges, the follow-up range
/// reads.
async fn read_groups(
    src: &LdapSource,
    conn: &mut Conn,
    id_attr: &str,
) -> Result<Vec<PendingGroup>, LdapError> {
    let cfg = &src.cfg;
    let mut groups: Vec<PendingGroup> = Vec::new();
    let Some(gcfg) = &cfg.groups else {
        return Ok(groups);
    };
    let member_attr = match gcfg.membership {
        Membership::MemberOf => "memberOf".to_string(),
        m => match cfg.member_range_size {
            Some(n) if m != Membership::MemberUid => {
                format!("{};range=0-{}", m.attribute(), n.saturating_sub(1))
            }
            _ => m.attribute().to_string(),
        },
    };
    let group_attrs = with_attrs(&gcfg.attributes, &[id_attr, &member_attr]);
    let filter = cfg.groups_filter().unwrap_or_default().to_string();
    let search = Search {
        kind: SearchKind::Groups,
        base: &gcfg.base_dn,
        scope: gcfg.scope.to_ldap(),
        filter: &filter,
        attrs: &group_attrs,
        paged: true,
    };
    let watched = gcfg.membership.attribute().to_ascii_lowercase();
    conn.search(&search, |raw| {
        let id = take_id(&raw, id_attr, SearchKind::Groups)?;
        let (attrs, ranges) = to_attributes(&raw.attrs);
        let next_range = ranges
            .into_iter()
            .find(|(name, _)| *name == watched)
            .and_then(|(name, end)| end.map(|e| (name, e + 1)));
        groups.push(PendingGroup {
            entry: Entry {
                id,
                locator: raw.dn.to_string(),
                attrs,
            },
            next_range,
        });
        Ok(())
    })
    .await?;

    // Ranged membership: keep asking for the next range until one ends with `*`.
    for g in groups.iter_mut() {
        if let Some((attr, start)) = g.next_range.take() {
            read_ranges(conn, cfg.member_range_size, g, &attr, start).await?;
        }
    }
    Ok(groups)
}

/// Every stable id must be unique across users and groups (users among themselves were
/// checked as they arrived).
fn check_unique(users: &Users, groups: &[PendingGroup], attr: &str) -> Result<(), LdapError> {
    let mut seen: HashMap<&str, &str> = HashMap::with_capacity(groups.len());
    for g in groups {
        let e = &g.entry;
        let first = users
            .by_id
            .get(&e.id, |p| id_at(&users.entries, p))
            .and_then(|p| users.entries.get(p))
            .map(|u| u.locator.as_str())
            .or_else(|| seen.insert(&e.id, &e.locator));
        if let Some(first) = first {
            return Err(LdapError::DuplicateId {
                attribute: attr.to_string(),
                id: e.id.clone(),
                first: first.to_string(),
                second: e.locator.clone(),
            });
        }
    }
    Ok(())
}

async fn read_ranges(
    conn: &mut Conn,
    step: Option<u32>,
    g: &mut PendingGroup,
    attr: &str,
    mut start: u64,
) -> Result<(), LdapError> {
    let dn = g.entry.locator.clone();
    let mut rounds = 0u32;
    loop {
        rounds += 1;
        let spec = match step {
            Some(n) => format!("{attr};range={start}-{}", start + u64::from(n) - 1),
            None => format!("{attr};range={start}-*"),
        };
        let attrs = vec![spec];
        let search = Search {
            kind: SearchKind::MemberRange,
            base: &dn,
            scope: ldap3::Scope::Base,
            filter: "(objectClass=*)",
            attrs: &attrs,
            paged: false,
        };
        let mut got: Option<(u64, Option<u64>, Vec<Value>)> = None;
        let mut bad = false;
        conn.search(&search, |raw| {
            for a in &raw.attrs {
                if let Some((base, s, e)) = split_range(a.desc) {
                    if base.eq_ignore_ascii_case(attr) {
                        let values = a.values.iter().map(|v| convert_value(attr, v)).collect();
                        got = Some((s, e, values));
                    }
                } else if a.desc.eq_ignore_ascii_case(attr) && !a.values.is_empty() {
                    bad = true;
                }
            }
            Ok(())
        })
        .await?;
        if bad {
            return Err(LdapError::Protocol {
                url: conn_url(conn),
                reason: format!("asked {dn:?} for a range of {attr} and got the whole attribute"),
            });
        }
        let Some((s, end, values)) = got else {
            // Nothing left in this range: the previous one ended exactly at the last value.
            return Ok(());
        };
        if s != start {
            return Err(LdapError::Protocol {
                url: conn_url(conn),
                reason: format!(
                    "asked {dn:?} for {attr} from value {start} and got a range starting at {s}"
                ),
            });
        }
        let n = values.len() as u64;
        let display = g
            .entry
            .attrs
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(attr))
            .map(|(name, _)| name.to_string())
            .unwrap_or_else(|| attr.to_string());
        let mut existing = g.entry.attrs.remove(attr).unwrap_or_default();
        existing.extend(values);
        g.entry.attrs.set(&display, existing);
        tracing::debug!(group = %dn, attr, start, values = n, rounds, "membership range read");
        match end {
            None => return Ok(()),
            Some(e) if e < start => {
                return Err(LdapError::Protocol {
                    url: conn_url(conn),
                    reason: format!("range of {attr} on {dn:?} went backwards ({start}-{e})"),
                })
            }
            Some(e) => start = e + 1,
        }
    }
}

fn conn_url(conn: &Conn) -> String {
    conn.url().to_string()
}

/// Strips the optional `#'0101'B` unique identifier of a nameAndOptionalUID value.
fn strip_optional_uid(v: &str) -> &str {
    match v.rfind('#') {
        Some(i) if v[i + 1..].starts_with('\'') && v.ends_with("'B") => &v[..i],
        _ => v,
    }
}

fn resolve_membership(
    src: &LdapSource,
    read: &Users,
    pending: Vec<PendingGroup>,
    in_chain: HashMap<usize, Vec<String>>,
) -> Vec<Group> {
    let Some(gcfg) = &src.cfg.groups else {
        return Vec::new();
    };
    let membership = gcfg.membership;
    let users = read.entries.as_slice();
    let mut members: Vec<Vec<String>> = vec![Vec::new(); pending.len()];
    match membership {
        Membership::Member | Membership::UniqueMember => {
            // Member values almost always repeat the DN as the server wrote it, so an exact
            // match is tried first; only a miss pays for normalising (case, spaces, escapes),
            // and the normalised table is built the first time one is needed.
            let entries = || {
                users
                    .iter()
                    .map(|u| (&u.locator, &u.id))
                    .chain(pending.iter().map(|g| (&g.entry.locator, &g.entry.id)))
            };
            let mut group_dns: HashMap<&str, &str> = HashMap::with_capacity(pending.len());
            for g in &pending {
                group_dns
                    .entry(g.entry.locator.as_str())
                    .or_insert(g.entry.id.as_str());
            }
            let exact = |dn: &str| {
                read.by_dn
                    .get(dn, |p| dn_at(users, p))
                    .and_then(|p| users.get(p))
                    .map(|u| u.id.as_str())
                    .or_else(|| group_dns.get(dn).copied())
            };
            let mut by_normal: Option<HashMap<String, &str>> = None;
            let attr = membership.attribute();
            for (i, g) in pending.iter().enumerate() {
                let mut dropped = 0usize;
                for v in g.entry.attrs.get(attr) {
                    let Value::Text(dn) = v else {
                        dropped += 1;
                        continue;
                    };
                    let dn = strip_optional_uid(dn);
                    let found = exact(dn).or_else(|| {
                        let table = by_normal.get_or_insert_with(|| {
                            let mut t = HashMap::with_capacity(users.len() + pending.len());
                            for (dn, id) in entries() {
                                t.entry(normalize_dn(dn)).or_insert(id.as_str());
                            }
                            t
                        });
                        table.get(&normalize_dn(dn)).copied()
                    });
                    match found {
                        Some(id) => members[i].push(id.to_string()),
                        None => {
                            dropped += 1;
                            tracing::debug!(group = %g.entry.locator, member = %dn, "member is not a user or group of this read; dropped");
                        }
                    }
                }
                if dropped > 0 {
                    tracing::debug!(group = %g.entry.locator, dropped, "members outside the read dropped");
                }
            }
        }
        Membership::MemberUid => {
            let mut by_uid: HashMap<String, &str> = HashMap::with_capacity(users.len());
            for u in users {
                for v in u.attrs.get("uid") {
                    if let Value::Text(uid) = v {
                        by_uid.insert(uid.to_lowercase().into_string(), &u.id);
                    }
                }
            }
            for (i, g) in pending.iter().enumerate() {
                for v in g.entry.attrs.get("memberUid") {
                    let uid = v.as_text().to_lowercase();
                    match by_uid.get(&uid) {
                        Some(id) => members[i].push((*id).to_string()),
                        None => {
                            tracing::debug!(group = %g.entry.locator, member_uid = %uid, "memberUid matches no user of this read; dropped")
                        }
                    }
                }
            }
        }
        Membership::MemberOf => {
            let by_dn: HashMap<String, usize> = pending
                .iter()
                .enumerate()
                .map(|(i, g)| (normalize_dn(&g.entry.locator), i))
                .collect();
            let holders = users.iter().map(|u| (&u.id, &u.attrs, &u.locator)).chain(
                pending
                    .iter()
                    .map(|g| (&g.entry.id, &g.entry.attrs, &g.entry.locator)),
            );
            for (id, attrs, dn) in holders {
                for v in attrs.get("memberOf") {
                    match by_dn.get(&normalize_dn(&v.as_text())) {
                        Some(&gi) => members[gi].push(id.clone()),
                        None => {
                            tracing::debug!(entry = %dn, group = %v.as_text(), "memberOf names a group outside this read; ignored")
                        }
                    }
                }
            }
        }
    }
    if !in_chain.is_empty() {
        // The server's transitive user list replaces the direct user members; direct member
        // groups stay so the nesting remains visible.
        let user_ids: std::collections::HashSet<&str> =
            users.iter().map(|u| u.id.as_str()).collect();
        for (i, found) in in_chain {
            if let Some(m) = members.get_mut(i) {
                m.retain(|id| !user_ids.contains(id.as_str()));
                m.extend(
                    found
                        .into_iter()
                        .filter(|id| user_ids.contains(id.as_str())),
                );
            }
        }
    }
    pending
        .into_iter()
        .zip(members)
        .map(|(g, mut m)| {
            m.sort();
            m.dedup();
            Group {
                entry: g.entry,
                members: m,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_attributes_are_added_once() {
        assert_eq!(with_attrs(&[], &["entryUUID"]), vec!["*", "entryUUID"]);
        assert_eq!(
            with_attrs(
                &["cn".into(), "EntryUUID".into()],
                &["entryUUID", "memberOf"]
            ),
            vec!["cn", "EntryUUID", "memberOf"]
        );
    }

    #[test]
    fn unique_member_uid_suffix_is_stripped() {
        assert_eq!(strip_optional_uid("cn=a,dc=x#'0101'B"), "cn=a,dc=x");
        assert_eq!(strip_optional_uid("cn=a\\#b,dc=x"), "cn=a\\#b,dc=x");
    }
}
