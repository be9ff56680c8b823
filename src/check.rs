//! `ironbridge check`: what the configuration needs from Ironclad compared with what the token
//! was granted, as a table a person can act on. The comparison is pure; gathering the granted
//! scopes and probing read access is done by the caller in [`crate::cli`].
//!
//! What does not live here: talking to Ironclad or the directory.

use crate::config::{Policy, RemoveMode};
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// Ironclad's scope names (one per operation).
pub mod scopes {
    /// GET /Users, GET /Users/{id}.
    pub const READ_USERS: &str = "scim.users.readUsers";
    /// POST /Users.
    pub const CREATE_USERS: &str = "scim.users.createUsers";
    /// PUT, PATCH /Users/{id}.
    pub const UPDATE_USERS: &str = "scim.users.updateUsers";
    /// DELETE /Users/{id}.
    pub const DELETE_USERS: &str = "scim.users.deleteUsers";
    /// GET /Groups, GET /Groups/{id}.
    pub const READ_GROUPS: &str = "scim.groups.readGroups";
    /// POST /Groups.
    pub const CREATE_GROUPS: &str = "scim.groups.createGroups";
    /// PUT, PATCH /Groups/{id}.
    pub const UPDATE_GROUPS: &str = "scim.groups.updateGroups";
    /// DELETE /Groups/{id}.
    pub const DELETE_GROUPS: &str = "scim.groups.deleteGroups";
    /// GET /Schemas.
    pub const READ_SCHEMAS: &str = "scim.schemas.readSchemas";
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeRow {
    /// What the bridge does with it.
    pub operation: &'static str,
    /// The scope Ironclad requires.
    pub scope: &'static str,
    /// Whether the token carries it.
    pub granted: bool,
    /// Whether the configured policy needs it.
    pub needed: bool,
    /// Not needed, but the configuration would use it: without it, what it would write is
    /// reported instead (the group write scopes when the mapping pushes groups).
    pub wanted: bool,
}

/// How the configuration and its mapping remove people and manage groups, as a run would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effective {
    /// The mapping's `[removal] action`, or else `policy.remove_users`.
    pub remove_users: RemoveMode,
    /// `policy.manage_groups`, and the mapping pushes groups.
    pub manage_groups: bool,
}

impl Effective {
    /// What the policy alone says (no mapping to refine it).
    pub fn of_policy(policy: &Policy) -> Self {
        Effective {
            remove_users: policy.remove_users,
            manage_groups: policy.manage_groups,
        }
    }
}

/// The scope table for a policy (as the mapping makes it effective) and a set of granted
/// scopes.
pub fn scope_rows(policy: &Policy, eff: Effective, granted: &BTreeSet<String>) -> Vec<ScopeRow> {
    use scopes::*;
    let g = |s: &str| granted.contains(s);
    let removes = eff.remove_users;
    let rows: [(&'static str, &'static str, bool); 9] = [
        ("read users (plan, match, verify)", READ_USERS, true),
        ("create users (joiners)", CREATE_USERS, policy.create_users),
        (
            "update users (movers; deactivate-removal)",
            UPDATE_USERS,
            // `delete_or_deactivate` needs one of the two: the one granted is used.
            policy.update_users
                || removes == RemoveMode::Deactivate
                || (removes == RemoveMode::DeleteOrDeactivate && !g(DELETE_USERS)),
        ),
        (
            "delete users (leavers)",
            DELETE_USERS,
            removes == RemoveMode::Delete
                || (removes == RemoveMode::DeleteOrDeactivate && !g(UPDATE_USERS)),
        ),
        (
            "read groups (membership drift)",
            READ_GROUPS,
            eff.manage_groups,
        ),
        // Without the group write scopes, membership drift is reported and nothing written:
        // a read-only setup that works as it is.
        (
            "create groups (without it: reported, not created)",
            CREATE_GROUPS,
            false,
        ),
        (
            "update group membership (without it: drift reported, not written)",
            UPDATE_GROUPS,
            false,
        ),
        (
            "delete groups (bridge-managed ones no longer selected; without it they are reported, not deleted)",
            DELETE_GROUPS,
            false,
        ),
        ("read schemas (diagnostics)", READ_SCHEMAS, false),
    ];
    let group_write = [CREATE_GROUPS, UPDATE_GROUPS, DELETE_GROUPS];
    rows.into_iter()
        .map(|(operation, scope, needed)| ScopeRow {
            operation,
            scope,
            granted: g(scope),
            needed,
            wanted: eff.manage_groups && group_write.contains(&scope),
        })
        .collect()
}

/// The scopes the policy needs that are not granted.
pub fn missing(rows: &[ScopeRow]) -> Vec<&'static str> {
    rows.iter()
        .filter(|r| r.needed && !r.granted)
        .map(|r| r.scope)
        .collect()
}

/// Renders the table as aligned text.
pub fn render_table(rows: &[ScopeRow]) -> String {
    let w0 = rows
        .iter()
        .map(|r| r.operation.len())
        .max()
        .unwrap_or(9)
        .max(9);
    let w1 = rows.iter().map(|r| r.scope.len()).max().unwrap_or(5).max(5);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<w0$}  {:<w1$}  granted  policy needs",
        "operation", "scope"
    );
    for r in rows {
        let verdict = match (r.needed, r.wanted, r.granted) {
            (true, _, true) => "yes",
            (true, _, false) => "YES (missing)",
            (false, true, true) => "optional, used",
            (false, true, false) => "optional: groups are reported, not written",
            (false, false, _) => "no",
        };
        let _ = writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:<7}  {}",
            r.operation,
            r.scope,
            if r.granted { "yes" } else { "no" },
            verdict
        );
    }
    out
}

/// Advice naming what to fix when scopes are missing. `removal_in_mapping`: the mapping's
/// `[removal] action` decides how people are removed (not `policy.remove_users`).
pub fn advice(policy: &Policy, removal_in_mapping: bool, missing: &[&str]) -> String {
    if missing.is_empty() {
        return "every scope the configuration needs is granted".to_string();
    }
    let mut out = format!(
        "missing scopes: {}\nfix: register the OAuth client (or generate the token) with these scopes, or narrow [policy]:",
        missing.join(" ")
    );
    for m in missing {
        let hint = match *m {
            scopes::CREATE_USERS if policy.create_users => {
                "policy.create_users = false (joiners will be reported, not created)"
            }
            scopes::UPDATE_USERS if removal_in_mapping => {
                "policy.update_users = false and the mapping's [removal] action other than \"deactivate\""
            }
            scopes::UPDATE_USERS => {
                "policy.update_users = false and policy.remove_users other than \"deactivate\""
            }
            scopes::DELETE_USERS if removal_in_mapping => {
                "the mapping's [removal] action = \"deactivate\" (needs updateUsers) or \"keep\""
            }
            scopes::DELETE_USERS => {
                "policy.remove_users = \"deactivate\" (needs updateUsers) or \"keep\""
            }
            scopes::READ_GROUPS => {
                "policy.manage_groups = false (groups are then neither read nor written)"
            }
            _ => "",
        };
        if !hint.is_empty() {
            let _ = write!(out, "\n  {m}: or set {hint}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn least_privilege() -> BTreeSet<String> {
        [
            scopes::READ_USERS,
            scopes::UPDATE_USERS,
            scopes::DELETE_USERS,
            scopes::READ_GROUPS,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    #[test]
    fn least_privilege_lacks_creates_and_group_writes_are_optional() {
        let policy = Policy {
            create_users: true,
            update_users: true,
            remove_users: RemoveMode::Delete,
            manage_groups: true,
            write_method: crate::config::WriteMethod::Balanced,
            full_compare: false,
            put_reread_after_secs: 60,
        };
        let rows = scope_rows(&policy, Effective::of_policy(&policy), &least_privilege());
        // Without the group write scopes, drift is reported: a read-only setup, not a failure.
        assert_eq!(missing(&rows), vec![scopes::CREATE_USERS]);
        let table = render_table(&rows);
        assert!(table.contains("YES (missing)"));
        // But the table says the mapping would use them, not that nothing needs them.
        let line = table
            .lines()
            .find(|l| l.contains(scopes::UPDATE_GROUPS))
            .unwrap();
        assert!(
            line.ends_with("optional: groups are reported, not written"),
            "{table}"
        );
    }

    #[test]
    fn delete_or_deactivate_needs_one_of_the_two_scopes() {
        let policy = Policy {
            create_users: false,
            update_users: false,
            remove_users: RemoveMode::DeleteOrDeactivate,
            manage_groups: false,
            write_method: crate::config::WriteMethod::Balanced,
            full_compare: false,
            put_reread_after_secs: 60,
        };
        let with = |s: &[&str]| -> Vec<&'static str> {
            let granted: BTreeSet<String> = s.iter().map(|x| x.to_string()).collect();
            missing(&scope_rows(
                &policy,
                Effective::of_policy(&policy),
                &granted,
            ))
        };
        let read = scopes::READ_USERS;
        assert!(with(&[read, scopes::UPDATE_USERS]).is_empty());
        assert!(with(&[read, scopes::DELETE_USERS]).is_empty());
        assert_eq!(
            with(&[read]),
            vec![scopes::UPDATE_USERS, scopes::DELETE_USERS]
        );
    }

    #[test]
    fn narrowed_policy_is_satisfied_by_least_privilege() {
        let policy = Policy {
            create_users: false,
            update_users: true,
            remove_users: RemoveMode::Delete,
            manage_groups: false,
            write_method: crate::config::WriteMethod::Balanced,
            full_compare: false,
            put_reread_after_secs: 60,
        };
        assert!(missing(&scope_rows(
            &policy,
            Effective::of_policy(&policy),
            &least_privilege()
        ))
        .is_empty());
    }

    #[test]
    fn deactivate_needs_update_not_delete() {
        let policy = Policy {
            create_users: false,
            update_users: false,
            remove_users: RemoveMode::Deactivate,
            manage_groups: false,
            write_method: crate::config::WriteMethod::Balanced,
            full_compare: false,
            put_reread_after_secs: 60,
        };
        let granted: BTreeSet<String> = [scopes::READ_USERS.to_string()].into();
        assert_eq!(
            missing(&scope_rows(
                &policy,
                Effective::of_policy(&policy),
                &granted
            )),
            vec![scopes::UPDATE_USERS]
        );
    }

    #[test]
    fn the_mappings_removal_action_decides_over_the_policy() {
        let policy = Policy {
            create_users: false,
            update_users: false,
            remove_users: RemoveMode::Delete,
            manage_groups: true,
            write_method: crate::config::WriteMethod::Balanced,
            full_compare: false,
            put_reread_after_secs: 60,
        };
        // The mapping deactivates and pushes no group.
        let eff = Effective {
            remove_users: RemoveMode::Deactivate,
            manage_groups: false,
        };
        let granted: BTreeSet<String> = [scopes::READ_USERS.to_string()].into();
        let lacking = missing(&scope_rows(&policy, eff, &granted));
        assert_eq!(lacking, vec![scopes::UPDATE_USERS]);
        assert!(advice(&policy, true, &lacking).contains("the mapping's [removal] action"));
    }
}
