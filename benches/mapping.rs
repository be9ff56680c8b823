//! Criterion benchmark: the shipped Active Directory mapping over a snapshot of 100,000
//! realistic user entries (about twenty attributes each, a manager DN, nested group
//! membership), measured end to end: indexing the snapshot, then evaluating every entry
//! (scope, disabled, all attributes, SCIM JSON) and dropping each result, as the reconciler
//! does. Target: at most 1 s on one core.
//!
//! Run with `cargo bench --bench mapping`; the figure is recorded in docs/BENCHMARKS.md. The
//! benchmark uses the allocator the `ironbridge` binary uses (mimalloc), so that it measures
//! what the product does.
#![allow(clippy::panic, missing_docs)]

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use chrono::{DateTime, Utc};
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, Criterion};
use ironbridge::mapping::Mapping;
use ironbridge::model::{Attributes, Entry, Group, Snapshot, Value};
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

const USERS: usize = 100_000;

fn guid(i: usize) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", i, i * 7919)
}

fn dn(i: usize) -> String {
    format!("CN=User\\, Number {i},OU=People,OU=Corp,DC=example,DC=com")
}

fn snapshot(now: DateTime<Utc>) -> Snapshot {
    let mut users = Vec::with_capacity(USERS);
    for i in 0..USERS {
        let mut a = Attributes::new();
        for oc in ["top", "person", "organizationalPerson", "user"] {
            a.push("objectClass", oc);
        }
        a.push("cn", format!("User, Number {i}"));
        a.push("sn", format!("Number{i}"));
        a.push("givenName", "User");
        a.push("displayName", format!("User Number {i}"));
        a.push("sAMAccountName", format!("user{i}"));
        a.push("userPrincipalName", format!("User.Number{i}@Example.com"));
        a.push("mail", format!("user.number{i}@example.com"));
        a.push(
            "title",
            ["Counsel", "Paralegal", "Contract Manager", "Engineer"][i % 4],
        );
        a.push(
            "department",
            ["Legal", "Sales", "Procurement", "Engineering"][i % 4],
        );
        a.push("company", "Example Corp");
        a.push("employeeID", format!("E{i:06}"));
        if i > 0 {
            a.push("manager", dn(i / 10));
        }
        // One in twenty disabled (0x2), the rest normal accounts.
        a.push(
            "userAccountControl",
            if i % 20 == 0 { "514" } else { "512" },
        );
        a.push("accountExpires", "9223372036854775807");
        a.push("whenCreated", "20200101000000.0Z");
        a.set(
            "objectGUID",
            vec![Value::binary((i as u128).to_le_bytes().to_vec())],
        );
        a.push("memberOf", "CN=Ironclad Users,OU=Groups,DC=example,DC=com");
        users.push(Entry {
            id: guid(i),
            locator: dn(i),
            attrs: a,
        });
    }
    let group = |id: &str, cn: &str, members: Vec<String>| {
        let mut a = Attributes::new();
        a.push("cn", cn);
        Group {
            entry: Entry {
                id: id.into(),
                locator: format!("CN={cn},OU=Groups,DC=example,DC=com"),
                attrs: a,
            },
            members,
        }
    };
    // Nine in ten users are members of a team group nested in "Ironclad Users".
    let teams: Vec<Group> = (0..10)
        .map(|t| {
            group(
                &format!("team-{t}"),
                &format!("Ironclad-Team {t}"),
                (0..USERS)
                    .filter(|i| i % 10 == t && i % 10 != 9)
                    .map(guid)
                    .collect(),
            )
        })
        .collect();
    let mut groups = vec![group(
        "ironclad-users",
        "Ironclad Users",
        teams.iter().map(|g| g.entry.id.clone()).collect(),
    )];
    groups.extend(teams);
    Snapshot {
        source: "benchmark".into(),
        read_at: now,
        users,
        groups,
    }
}

/// CPU time of the benchmarking thread (`/proc/thread-self/schedstat`, nanoseconds on a CPU):
/// what "on one core" means even when other processes compete for the machine.
struct ThreadCpuTime {
    wall: WallTime,
}

fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        self.wall.formatter()
    }
}

fn cpu_time() -> Criterion<ThreadCpuTime> {
    Criterion::default().with_measurement(ThreadCpuTime { wall: WallTime })
}

fn bench(c: &mut Criterion) {
    run_bench(c, "active_directory_100k_entries");
}

fn bench_cpu(c: &mut Criterion<ThreadCpuTime>) {
    run_bench(c, "active_directory_100k_entries_cpu_time");
}

fn run_bench<M: Measurement>(c: &mut Criterion<M>, name: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/active-directory.toml");
    let mapping = Mapping::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let now = DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|e| panic!("{e}"));
    let snap = std::sync::Arc::new(snapshot(now));

    // Sanity: the run produces what the mapping says, so the benchmark measures real work.
    let run = mapping
        .prepare_shared(snap.clone(), now)
        .unwrap_or_else(|e| panic!("{e}"));
    let results = run.evaluate_all();
    let desired = results
        .iter()
        .filter(|r| r.as_ref().map(|e| e.desired).unwrap_or(false))
        .count();
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(
        desired,
        (0..USERS).filter(|i| i % 10 != 9 && i % 20 != 0).count()
    );
    assert_eq!(run.groups().groups.len(), 10);

    let mut g = c.benchmark_group("mapping");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    // Index the snapshot, evaluate every entry and drop each result, all inside the timing:
    // the reconciler consumes evaluations the same way, one at a time as they are made
    // (`Prepared::evaluate_iter`), keeping only its compact form of each.
    g.bench_function(name, |b| {
        b.iter(|| {
            let run = mapping
                .prepare_shared(black_box(snap.clone()), now)
                .unwrap_or_else(|e| panic!("{e}"));
            let mut desired = 0usize;
            for r in run.evaluate_iter() {
                desired += usize::from(black_box(r).is_ok_and(|e| e.desired));
            }
            black_box(desired)
        })
    });
    g.finish();
}

criterion_group!(wall, bench);
criterion_group! {
    name = cpu;
    config = cpu_time();
    targets = bench_cpu
}
criterion_main!(wall, cpu);
