//! The LDAP source against a real OpenLDAP `slapd` (see `support::slapd`): complete reads of a
//! generated 10,000-user directory (ids, non-ASCII and base64 values, binary values, disabled
//! users, nesting with a cycle, a group of 2,000 members, paging), every membership mode,
//! ldaps and StartTLS with a CA file, TLS failures, anonymous binds, and each failure that must
//! end a read with a clear error and no snapshot: wrong password, wrong base DN, bad filter,
//! size limit, referral, unreachable server, a connection cut or stalled mid-read (through a
//! TCP proxy in this file), and a transient cut that a reconnect recovers from.

use crate::support::slapd::{
    self, Fixture, Slapd, GROUPS, LIMITED, PARTNER, PEOPLE, POSIX, READER_DN, READER_PASSWORD,
};
use ironbridge::model::{Snapshot, Value};
use ironbridge::source::ldap::{normalize_dn, LdapError, LdapSource, LdapSourceConfig, SearchKind};
use ironbridge::source::{Source, SourceError};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A file holding the reader's password, for `bind_password = { file = ... }`.
fn password_file() -> &'static Path {
    static F: OnceLock<PathBuf> = OnceLock::new();
    F.get_or_init(|| {
        let p = slapd::shared().dir.join("reader.pw");
        std::fs::write(&p, format!("{READER_PASSWORD}\n")).unwrap();
        p
    })
}

/// Connection and bind lines for the shared slapd as the reader.
fn conn_toml(url: &str) -> String {
    format!(
        "url = \"{url}\"\nbind_dn = \"{READER_DN}\"\nbind_password = {{ file = \"{}\" }}\n",
        password_file().display()
    )
}

fn parse(toml_text: &str) -> LdapSourceConfig {
    toml::from_str(toml_text).unwrap_or_else(|e| panic!("{e}\n{toml_text}"))
}

fn open(toml_text: &str) -> LdapSource {
    LdapSource::open(&parse(toml_text), Path::new("/")).unwrap()
}

async fn read(toml_text: &str) -> Result<Snapshot, LdapError> {
    open(toml_text).read_snapshot().await
}

/// Users under ou=people (with the operational attributes the tests look at) and the
/// groupOfNames/groupOfUniqueNames groups.
fn full_toml(s: &Slapd, extra: &str) -> String {
    format!(
        "{}{extra}\n[users]\nbase_dn = \"{PEOPLE}\"\nattributes = [\"*\", \"pwdAccountLockedTime\", \"memberOf\"]\n[groups]\nbase_dn = \"{GROUPS}\"\n",
        conn_toml(&s.ldap_url)
    )
}

fn by_uid(snap: &Snapshot) -> HashMap<String, &ironbridge::model::Entry> {
    snap.users
        .iter()
        .map(|u| (u.attrs.first_text("uid").unwrap().into_owned(), u))
        .collect()
}

fn group_members(snap: &Snapshot) -> HashMap<String, Vec<String>> {
    snap.groups
        .iter()
        .map(|g| {
            (
                g.entry.attrs.first_text("cn").unwrap().into_owned(),
                g.members.clone(),
            )
        })
        .collect()
}

fn texts(e: &ironbridge::model::Entry, attr: &str) -> BTreeSet<String> {
    e.attrs
        .get(attr)
        .iter()
        .map(|v| v.as_text().into_owned())
        .collect()
}

#[tokio::test]
async fn full_read_matches_the_generated_directory() {
    let s = slapd::shared();
    let fx: &Fixture = &s.fixture;
    let t = Instant::now();
    let snap = read(&full_toml(s, "")).await.unwrap();
    eprintln!(
        "full read of {} users in {:?}",
        snap.users.len(),
        t.elapsed()
    );
    assert_eq!(snap.source, s.ldap_url);

    // Every user, with entryUUID as the id.
    assert_eq!(snap.users.len(), fx.users.len());
    let users = by_uid(&snap);
    for u in &fx.users {
        let got = users
            .get(&u.uid)
            .unwrap_or_else(|| panic!("{} missing", u.uid));
        assert_eq!(got.id, u.uuid, "{}", u.uid);
        assert_eq!(got.attrs.first_text("entryUUID").unwrap(), u.uuid);
        // slapd may re-escape (`\,` comes back as `\2C`): compare normalised DNs.
        assert_eq!(normalize_dn(&got.locator), normalize_dn(&u.dn));
        assert_eq!(got.attrs.first_text("cn").unwrap(), u.cn);
        // The disabled marker is there exactly for disabled users.
        assert_eq!(
            got.attrs.has("pwdAccountLockedTime"),
            u.disabled,
            "{}",
            u.uid
        );
        assert_eq!(got.attrs.has("PWDACCOUNTLOCKEDTIME"), u.disabled);
    }
    assert_eq!(fx.users.iter().filter(|u| u.disabled).count(), 20);

    // Non-ASCII and base64-encoded values come back exactly.
    assert_eq!(users["zoe"].attrs.first_text("cn").unwrap(), "Zoë Ñúñez");
    assert_eq!(users["zoe"].attrs.first_text("sn").unwrap(), "Ñúñez");
    assert_eq!(users["lilei"].attrs.first_text("CN").unwrap(), "李雷");
    assert_eq!(users["jdoe"].attrs.first_text("cn").unwrap(), "Doe, Jane");
    let odd: BTreeSet<String> = fx.user("odd").description.iter().cloned().collect();
    assert_eq!(texts(users["odd"], "description"), odd);
    // Binary values stay bytes.
    assert_eq!(
        users["photo"].attrs.get("jpegPhoto"),
        &[Value::binary(fx.user("photo").jpeg.clone().unwrap())]
    );
    // memberOf is read as text.
    assert!(texts(users["user00001"], "memberOf")
        .iter()
        .any(|g| g.starts_with("cn=all-staff")));

    // Groups: ids and direct members resolved to ids (members outside the read dropped).
    let members = group_members(&snap);
    assert_eq!(snap.groups.len(), fx.groups.len());
    for g in fx.groups.iter().filter(|g| g.class == "groupOfNames") {
        let got = snap.groups.iter().find(|x| x.entry.id == g.uuid).unwrap();
        assert_eq!(got.members, fx.expected_members(g), "group {}", g.cn);
    }
    assert_eq!(members["all-staff"].len(), 2000);
    assert_eq!(
        members["with-outsiders"],
        vec![fx.user("user00040").uuid.clone()]
    );
    assert_eq!(members["international"].len(), 4);

    // Nesting flattens; the cycle terminates.
    let flat = snap.flattened_members();
    let id_of = |cn: &str| fx.group(cn).uuid.clone();
    let eng: BTreeSet<String> = (1..=25)
        .map(|n| fx.user(&format!("user{n:05}")).uuid.clone())
        .collect();
    assert_eq!(flat[&id_of("engineering")], eng);
    let cycle: BTreeSet<String> = [31, 32]
        .iter()
        .map(|n| fx.user(&format!("user{n:05}")).uuid.clone())
        .collect();
    assert_eq!(flat[&id_of("cycle-a")], cycle);
    assert_eq!(flat[&id_of("cycle-b")], cycle);
}

#[tokio::test]
async fn small_pages_give_the_same_snapshot_as_large_ones() {
    let s = slapd::shared();
    let small = read(&full_toml(s, "page_size = 37")).await.unwrap();
    let large = read(&full_toml(s, "page_size = 5000")).await.unwrap();
    assert_eq!(small.users.len(), s.fixture.users.len());
    assert_eq!(small.users, large.users);
    assert_eq!(small.groups, large.groups);
}

#[tokio::test]
async fn unique_member_member_uid_and_member_of_modes() {
    let s = slapd::shared();
    let fx = &s.fixture;
    let conn = conn_toml(&s.ldap_url);
    let users = format!("[users]\nbase_dn = \"{PEOPLE}\"\nattributes = [\"uid\", \"cn\"]\n");

    let snap = read(&format!(
        "{conn}{users}[groups]\nbase_dn = \"{GROUPS}\"\nfilter = \"(objectClass=groupOfUniqueNames)\"\nmembership = \"uniqueMember\"\n"
    ))
    .await
    .unwrap();
    assert_eq!(snap.groups.len(), 1);
    assert_eq!(
        snap.groups[0].members,
        fx.expected_members(fx.group("unique"))
    );
    assert_eq!(snap.groups[0].members.len(), 5);

    let snap = read(&format!(
        "{conn}{users}[groups]\nbase_dn = \"{POSIX}\"\nfilter = \"(objectClass=posixGroup)\"\nmembership = \"memberUid\"\n"
    ))
    .await
    .unwrap();
    assert_eq!(snap.groups.len(), 1);
    assert_eq!(
        snap.groups[0].members,
        fx.expected_members(fx.group("posix-devs"))
    );
    assert_eq!(snap.groups[0].members.len(), 2);

    let snap = read(&format!(
        "{conn}{users}[groups]\nbase_dn = \"{GROUPS}\"\nfilter = \"(objectClass=groupOfNames)\"\nmembership = \"memberOf\"\n"
    ))
    .await
    .unwrap();
    for g in fx.groups.iter().filter(|g| g.class == "groupOfNames") {
        let got = snap.groups.iter().find(|x| x.entry.id == g.uuid).unwrap();
        assert_eq!(
            got.members,
            fx.expected_members(g),
            "memberOf mode, group {}",
            g.cn
        );
    }
}

fn one_user_toml(url: &str, extra: &str) -> String {
    format!(
        "{}{extra}\n[users]\nbase_dn = \"{PEOPLE}\"\nfilter = \"(uid=user0000*)\"\n",
        conn_toml(url)
    )
}

#[tokio::test]
async fn ldaps_and_starttls_with_a_ca_file() {
    let s = slapd::shared();
    let ca = format!("ca_file = \"{}\"", s.ca_file.display());
    let snap = read(&one_user_toml(&s.ldaps_url, &ca)).await.unwrap();
    assert_eq!(snap.users.len(), 9);
    let snap = read(&one_user_toml(
        &s.ldap_url,
        &format!("starttls = true\n{ca}"),
    ))
    .await
    .unwrap();
    assert_eq!(snap.users.len(), 9);
    let check = open(&one_user_toml(&s.ldaps_url, &ca))
        .check()
        .await
        .unwrap();
    assert!(check.security.contains("verified"), "{}", check.security);
    assert_eq!(check.searches[0].entries, 9);
}

#[tokio::test]
async fn tls_without_the_ca_fails_and_says_why() {
    let s = slapd::shared();
    for extra in ["", "starttls = true"] {
        let url = if extra.is_empty() {
            &s.ldaps_url
        } else {
            &s.ldap_url
        };
        let err = read(&one_user_toml(url, extra)).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LdapError::Tls { .. }), "{err:?}");
        assert!(
            msg.contains("not trusted") && msg.contains("ca_file"),
            "{msg}"
        );
    }
}

/// Collects log output for one test.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn insecure_skip_verify_reads_and_warns_every_run() {
    let s = slapd::shared();
    let buf = LogBuf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let src = open(&one_user_toml(
        &s.ldaps_url,
        "tls_insecure_skip_verify = true",
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        for _ in 0..2 {
            let snap = rt.block_on(src.read_snapshot()).unwrap();
            assert_eq!(snap.users.len(), 9);
        }
    });
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert_eq!(
        logs.matches("TLS certificate verification is disabled")
            .count(),
        2,
        "{logs}"
    );
    assert!(logs.contains("WARN"));
    assert!(!logs.contains(READER_PASSWORD));
}

#[tokio::test]
async fn anonymous_bind_is_allowed_or_refused_as_the_server_says() {
    let s = slapd::shared();
    let snap = read(&format!(
        "url = \"{}\"\nanonymous = true\n[users]\nbase_dn = \"{PEOPLE}\"\nfilter = \"(uid=user0000*)\"\n",
        s.ldap_url
    ))
    .await
    .unwrap();
    assert_eq!(snap.users.len(), 9);
    // The limited database refuses anonymous clients.
    let err = read(&format!(
        "url = \"{}\"\nanonymous = true\n[users]\nbase_dn = \"ou=people,{LIMITED}\"\n",
        s.ldap_url
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(err, LdapError::AccessRefused { rc: 53, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("bind_dn"), "{err}");
}

#[tokio::test]
async fn wrong_password_is_a_clear_error_without_the_password() {
    let s = slapd::shared();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "not-the-password-4711").unwrap();
    let cfg = parse(&format!(
        "url = \"{}\"\nbind_dn = \"{READER_DN}\"\nbind_password = {{ file = \"pw\" }}\n[users]\nbase_dn = \"{PEOPLE}\"\n",
        s.ldap_url
    ));
    let src = LdapSource::open(&cfg, dir.path()).unwrap();
    let err = Source::read(&src).await.unwrap_err();
    let SourceError::Ldap(inner) = &err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(inner, LdapError::InvalidCredentials { .. }),
        "{inner:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("invalid credentials") && msg.contains(READER_DN),
        "{msg}"
    );
    for text in [msg, format!("{err:?}"), format!("{src:?}")] {
        assert!(!text.contains("not-the-password-4711"), "{text}");
    }
    // check() reports the same.
    assert!(matches!(
        src.check().await,
        Err(LdapError::InvalidCredentials { .. })
    ));
}

#[tokio::test]
async fn wrong_base_dn_names_the_dn() {
    let s = slapd::shared();
    let err = read(&format!(
        "{}[users]\nbase_dn = \"ou=nobody,dc=example,dc=test\"\n",
        conn_toml(&s.ldap_url)
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(&err, LdapError::NoSuchBase { search: SearchKind::Users, base_dn, .. } if base_dn == "ou=nobody,dc=example,dc=test"),
        "{err:?}"
    );
    assert!(err.to_string().contains("ou=nobody,dc=example,dc=test"));
    let err = open(&format!(
        "{}[users]\nbase_dn = \"{PEOPLE}\"\n[groups]\nbase_dn = \"ou=teams,dc=example,dc=test\"\n",
        conn_toml(&s.ldap_url)
    ))
    .check()
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("groups search") && err.to_string().contains("ou=teams"),
        "{err}"
    );
}

#[test]
fn bad_filter_is_refused_naming_the_filter_and_search() {
    let cfg = parse(&format!(
        "{}[users]\nbase_dn = \"{PEOPLE}\"\n[groups]\nbase_dn = \"{GROUPS}\"\nfilter = \"(cn=eng*\"\n",
        conn_toml("ldap://127.0.0.1:1")
    ));
    let err = LdapSource::open(&cfg, Path::new("/")).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("groups.filter") && msg.contains("(cn=eng*"),
        "{msg}"
    );
}

#[tokio::test]
async fn size_limit_is_an_error_not_a_partial_snapshot() {
    let s = slapd::shared();
    for page in [5, 500] {
        let err = read(&format!(
            "{}page_size = {page}\n[users]\nbase_dn = \"ou=people,{LIMITED}\"\n",
            conn_toml(&s.ldap_url)
        ))
        .await
        .unwrap_err();
        assert!(
            matches!(err, LdapError::SizeLimit { entries: 10, .. }),
            "page {page}: {err:?}"
        );
        assert!(err.to_string().contains("size limit"));
    }
}

#[tokio::test]
async fn referrals_fail_unless_continuation_references_are_ignored() {
    let s = slapd::shared();
    let toml_text = |extra: &str| {
        format!(
            "{}{extra}\n[users]\nbase_dn = \"{PARTNER}\"\n",
            conn_toml(&s.ldap_url)
        )
    };
    let err = read(&toml_text("")).await.unwrap_err();
    assert!(matches!(err, LdapError::Referral { .. }), "{err:?}");
    assert!(err.to_string().contains("directory.partner.test"), "{err}");
    let snap = read(&toml_text("continuation_references = \"ignore\""))
        .await
        .unwrap();
    assert_eq!(snap.users.len(), 1);
    // A base DN that is itself a referral is never ignored.
    let err = read(&format!(
        "{}continuation_references = \"ignore\"\n[users]\nbase_dn = \"ou=elsewhere,{PARTNER}\"\n",
        conn_toml(&s.ldap_url)
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, LdapError::Referral { .. }), "{err:?}");
}

#[tokio::test]
async fn missing_id_attribute_is_an_error() {
    let s = slapd::shared();
    let err = read(&one_user_toml(
        &s.ldap_url,
        "id_attribute = \"employeeType\"",
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, LdapError::MissingId { .. }), "{err:?}");
    assert!(err.to_string().contains("employeeType") && err.to_string().contains("uid=user0000"));
}

#[tokio::test]
async fn unreachable_server_is_named() {
    let port = crate::support::free_port();
    let err = read(&format!(
        "url = \"ldap://127.0.0.1:{port}\"\nanonymous = true\n[users]\nbase_dn = \"{PEOPLE}\"\n"
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, LdapError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains(&port.to_string()));
}

#[tokio::test]
async fn check_reports_bind_and_counts() {
    let s = slapd::shared();
    let check = open(&full_toml(s, "")).check().await.unwrap();
    assert_eq!(check.bound_as, READER_DN);
    assert_eq!(check.searches.len(), 2);
    assert_eq!(check.searches[0].entries, s.fixture.users.len());
    assert_eq!(check.searches[1].entries, s.fixture.groups.len());
    let text = check.to_string();
    assert!(
        text.contains(&format!("users: {}", s.fixture.users.len())),
        "{text}"
    );
    assert!(text.contains("no TLS"), "{text}");
    assert_eq!(check.lines().len(), 3);
}

/// What the proxy does to the n-th connection's server-to-client bytes.
#[derive(Clone, Copy)]
enum Fault {
    /// Forward everything.
    None,
    /// Close both sides after this many bytes.
    CutAfter(usize),
    /// Stop forwarding after this many bytes but keep the connection open.
    StallAfter(usize),
}

/// A TCP proxy to the shared slapd that misbehaves as `plan` says, per connection.
async fn proxy(target: u16, plan: fn(usize) -> Fault) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let n = c.fetch_add(1, Ordering::SeqCst);
            let fault = plan(n);
            tokio::spawn(async move {
                let server = tokio::net::TcpStream::connect(("127.0.0.1", target))
                    .await
                    .unwrap();
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let mut sent = 0usize;
                let mut buf = vec![0u8; 16384];
                while let Ok(k) = sr.read(&mut buf).await {
                    if k == 0 {
                        break;
                    }
                    let limit = match fault {
                        Fault::None => usize::MAX,
                        Fault::CutAfter(l) | Fault::StallAfter(l) => l,
                    };
                    let take = k.min(limit.saturating_sub(sent));
                    if cw.write_all(&buf[..take]).await.is_err() {
                        break;
                    }
                    sent += take;
                    if take < k {
                        if let Fault::StallAfter(_) = fault {
                            // Hold both halves open and say nothing more.
                            tokio::time::sleep(Duration::from_secs(60)).await;
                        }
                        break;
                    }
                }
                up.abort();
            });
        }
    });
    (port, count)
}

#[tokio::test]
async fn dropped_connection_mid_read_is_an_error_after_bounded_reconnects() {
    let s = slapd::shared();
    let (port, conns) = proxy(s.port, |_| Fault::CutAfter(300_000)).await;
    let url = format!("ldap://127.0.0.1:{port}");
    let t = Instant::now();
    let err = read(&format!(
        "{}max_reconnects = 2\n[users]\nbase_dn = \"{PEOPLE}\"\n",
        conn_toml(&url)
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(err, LdapError::ConnectionDropped { reconnects: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("no snapshot"), "{err}");
    assert_eq!(
        conns.load(Ordering::SeqCst),
        3,
        "one connection per attempt"
    );
    assert!(t.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn transient_drop_is_recovered_by_a_reconnect() {
    let s = slapd::shared();
    let (port, conns) = proxy(s.port, |n| {
        if n == 0 {
            Fault::CutAfter(500_000)
        } else {
            Fault::None
        }
    })
    .await;
    let through_proxy =
        read(&full_toml(s, "").replace(&s.ldap_url, &format!("ldap://127.0.0.1:{port}")))
            .await
            .unwrap();
    // Two attempts, each with two connections (users and groups are read at the same time).
    assert_eq!(conns.load(Ordering::SeqCst), 4);
    let direct = read(&full_toml(s, "")).await.unwrap();
    assert_eq!(through_proxy.users, direct.users);
    assert_eq!(through_proxy.groups, direct.groups);
}

#[tokio::test]
async fn stalled_server_times_out_and_is_an_error() {
    let s = slapd::shared();
    let (port, _) = proxy(s.port, |_| Fault::StallAfter(200_000)).await;
    let url = format!("ldap://127.0.0.1:{port}");
    let t = Instant::now();
    let err = read(&format!(
        "{}max_reconnects = 0\ntime_limit_secs = 1\n[users]\nbase_dn = \"{PEOPLE}\"\n",
        conn_toml(&url)
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(err, LdapError::ConnectionDropped { reconnects: 0, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("no answer from the server within 3 s"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}
