//! Integration tests of the LDIF file source: the bundled sample directory reads as the README
//! describes it, an Active Directory export (CRLF, base64 DN, objectGUID, options) reads into
//! the same model as LDAP, and every malformed fixture under `tests/fixtures/ldif/bad/` fails
//! with its `file:line` and no snapshot.

use ironbridge::model::Snapshot;
use ironbridge::source::ldif::{parse_ldif, LdifSource, LdifSourceConfig};
use ironbridge::source::{Source, SourceConfig, SourceError};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    crate::support::repo().join("tests/fixtures/ldif")
}

fn ldif_config(toml_text: &str) -> LdifSourceConfig {
    match toml::from_str::<SourceConfig>(toml_text).unwrap() {
        SourceConfig::Ldif(c) => c,
        other => panic!("not an ldif config: {other:?}"),
    }
}

async fn read(cfg: LdifSourceConfig, base: &Path) -> Result<Snapshot, SourceError> {
    let source = LdifSource::open(cfg, base).map_err(SourceError::from)?;
    source.read().await
}

fn user_by_uid<'a>(snap: &'a Snapshot, uid: &str) -> &'a ironbridge::model::Entry {
    snap.users
        .iter()
        .find(|u| u.attrs.first_text("uid").as_deref() == Some(uid))
        .unwrap_or_else(|| panic!("no user {uid}"))
}

#[tokio::test]
async fn sample_directory_reads_as_expected() {
    let base = crate::support::repo().join("examples/sample");
    let cfg = ldif_config("kind = \"ldif\"\npath = \"directory.ldif\"\n");
    cfg.validate(&base).unwrap();
    let snap = read(cfg, &base).await.unwrap();

    assert_eq!(snap.users.len(), 25);
    assert_eq!(snap.groups.len(), 5);
    assert!(snap.source.ends_with("directory.ldif"));
    // Every id is the entry's entryUUID, unique.
    let ids: BTreeSet<&str> = snap.users.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids.len(), 25);
    for u in &snap.users {
        assert_eq!(u.attrs.first_text("entryUUID").unwrap(), u.id);
        assert!(u.locator.ends_with(",ou=people,dc=example,dc=com"));
        assert!(uuid::Uuid::parse_str(&u.id).is_ok(), "{}", u.id);
    }

    // The base64 cn decodes to text; non-ASCII names survive.
    let zoe = user_by_uid(&snap, "zangstrom");
    assert_eq!(zoe.attrs.first_text("cn").unwrap(), "Zoë Ångström");
    assert_eq!(
        user_by_uid(&snap, "lzolc").attrs.first_text("sn").unwrap(),
        "Żółć"
    );
    // The folded description is one value.
    let rossi = user_by_uid(&snap, "mrossi");
    assert_eq!(rossi.attrs.get("description").len(), 1);
    assert!(rossi
        .attrs
        .first_text("description")
        .unwrap()
        .contains("approval threshold"));
    // The leaver is there, marked locked.
    assert!(user_by_uid(&snap, "rpatel")
        .attrs
        .has("pwdAccountLockedTime"));
    // Managers are DNs of people in the file.
    let locators: HashMap<String, &str> = snap
        .users
        .iter()
        .map(|u| (u.locator.to_lowercase(), u.id.as_str()))
        .collect();
    let with_manager = snap
        .users
        .iter()
        .filter(|u| u.attrs.has("manager"))
        .inspect(|u| {
            let m = u.attrs.first_text("manager").unwrap().to_lowercase();
            assert!(
                locators.contains_key(&m),
                "manager {m} of {} unknown",
                u.locator
            );
        })
        .count();
    assert_eq!(with_manager, 24, "everyone but the CEO has a manager");

    // Groups: the scope group nests legal and sales.
    let by_cn: HashMap<String, &ironbridge::model::Group> = snap
        .groups
        .iter()
        .map(|g| (g.entry.attrs.first_text("cn").unwrap().to_string(), g))
        .collect();
    let scope = by_cn["ironclad-users"];
    assert!(scope.members.contains(&by_cn["legal"].entry.id));
    assert!(scope.members.contains(&by_cn["sales"].entry.id));
    assert!(
        !scope.entry.attrs.has("member"),
        "membership is resolved, not kept raw"
    );
    let flat = snap.flattened_members();
    let in_scope = &flat[&scope.entry.id];
    assert_eq!(in_scope.len(), 18);
    assert!(
        in_scope.contains(&zoe.id),
        "legal is nested in the scope group"
    );
    assert!(in_scope.contains(&user_by_uid(&snap, "tbrown").id));
    assert!(!in_scope.contains(&user_by_uid(&snap, "dsmith").id));
    assert_eq!(flat[&by_cn["legal"].entry.id].len(), 6);
    assert_eq!(by_cn["contract-approvers"].members.len(), 5);
}

#[tokio::test]
async fn active_directory_export_with_crlf_guids_and_options() {
    let dir = fixtures().join("good");
    let raw = std::fs::read(dir.join("ad-export-crlf.ldif")).unwrap();
    assert!(
        raw.windows(2).any(|w| w == b"\r\n"),
        "the fixture must keep its CRLF line ends"
    );
    let cfg = ldif_config(
        "kind = \"ldif\"\npath = \"ad-export-crlf.ldif\"\nid_attribute = \"objectGUID\"\nid_fallback = \"error\"\n",
    );
    let snap = read(cfg, &dir).await.unwrap();
    assert_eq!(snap.users.len(), 1, "the computer account is not a person");
    let zoe = &snap.users[0];
    assert_eq!(zoe.id, "a3c1f2d0-7b6e-4f21-9c3d-0e5a8b7c6d41");
    assert_eq!(zoe.locator, "CN=Zoë Ångström,OU=Staff,DC=corp,DC=example");
    assert_eq!(
        zoe.attrs.first_text("objectSid").unwrap(),
        "S-1-5-21-1004336348-1177238915-682003330-1105"
    );
    assert_eq!(zoe.attrs.first_text("cn").unwrap(), "Zoë Ångström");
    assert_eq!(zoe.attrs.get("cn;lang-sv").len(), 1);
    assert!(matches!(
        zoe.attrs.get("userCertificate")[0],
        ironbridge::model::Value::Binary(_)
    ));
    assert!(
        !zoe.attrs.has("unicodePwd"),
        "password attributes are dropped"
    );
    assert_eq!(
        zoe.attrs.first_text("description").unwrap(),
        "Senior counsel, responsible for the Nordic region's vendor and customer contracts."
    );
    assert_eq!(snap.groups.len(), 1);
    let legal = &snap.groups[0];
    assert_eq!(legal.entry.id, "0f8e4c7a-96c2-4b1f-8d2e-3a5b6c7d8e9f");
    assert_eq!(
        legal.members,
        vec![zoe.id.clone()],
        "base64 member DN resolved"
    );

    // memberOf instead of member gives the same membership.
    let cfg = ldif_config(
        "kind = \"ldif\"\npath = \"ad-export-crlf.ldif\"\nid_attribute = \"objectGUID\"\n[groups]\nmembership = [\"memberOf\"]\n",
    );
    let snap = read(cfg, &dir).await.unwrap();
    assert_eq!(snap.groups[0].members, vec![zoe.id.clone()]);
}

/// Every bad fixture: (file, line, words the message must contain).
const BAD: &[(&str, usize, &str)] = &[
    ("bad-attribute-name.ldif", 3, "not an attribute name"),
    ("bad-base64.ldif", 7, "bad base64"),
    ("change-record.ldif", 6, "change records"),
    ("duplicate-dn.ldif", 9, "duplicate dn"),
    ("duplicate-id.ldif", 7, "duplicate id"),
    ("missing-colon.ldif", 5, "missing `:` after `cn`"),
    ("no-dn.ldif", 5, "record without dn"),
    ("not-utf8.ldif", 3, "not UTF-8"),
    ("orphan-continuation.ldif", 4, "continues the previous line"),
    ("second-dn.ldif", 4, "second `dn:`"),
    ("url-value.ldif", 6, "URL values"),
    ("version-2.ldif", 1, "version"),
];

#[tokio::test]
async fn every_bad_fixture_gives_its_file_line_error_and_no_snapshot() {
    let dir = fixtures().join("bad");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let listed: Vec<String> = BAD.iter().map(|(f, _, _)| f.to_string()).collect();
    assert_eq!(
        on_disk, listed,
        "every bad fixture needs an expectation here"
    );

    for (file, line, words) in BAD {
        let cfg = ldif_config(&format!("kind = \"ldif\"\npath = \"{file}\"\n"));
        let err = match read(cfg, &dir).await {
            Ok(snap) => panic!("{file}: read {} users instead of failing", snap.users.len()),
            Err(e) => e,
        };
        let text = err.to_string();
        let path = dir.join(file).display().to_string();
        assert!(
            text.starts_with(&format!("{path}:{line}: ")),
            "{file}: expected line {line}, got: {text}"
        );
        assert!(
            text.contains(words),
            "{file}: expected `{words}` in: {text}"
        );
        match err {
            SourceError::Ldif(e) => assert_eq!(e.line, *line),
            other => panic!("{file}: not an LDIF error: {other:?}"),
        }
    }
}

#[test]
fn url_values_and_change_records_are_refused_naming_the_line() {
    let dir = fixtures().join("bad");
    for (file, line, words) in [
        ("url-value.ldif", 6, "jpegPhoto:< URL"),
        ("change-record.ldif", 6, "changetype:"),
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let e = parse_ldif(&text, file).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), (file, line));
        assert!(e.message.contains(words), "{e}");
        assert!(e.message.contains("not supported"), "{e}");
    }
}

#[tokio::test]
async fn missing_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ldif_config("kind = \"ldif\"\npath = \"nope.ldif\"\n");
    let msg = cfg.validate(dir.path()).unwrap_err();
    assert!(
        msg.contains("source.path") && msg.contains("nope.ldif"),
        "{msg}"
    );
    let e = LdifSource::open(cfg, dir.path()).unwrap_err();
    assert!(e.to_string().contains("nope.ldif"), "{e}");
}

/// A generated 20,000-person file streams through in bounded time, members resolved.
#[tokio::test]
async fn large_file_reads_quickly() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.ldif");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let n = 20_000;
    for i in 0..n {
        writeln!(
            f,
            "dn: uid=user{i},ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nuid: user{i}\n\
             cn: User {i}\nmail: user{i}@example.com\nentryUUID: 00000000-0000-0000-0000-{i:012}\n"
        )
        .unwrap();
    }
    writeln!(
        f,
        "dn: cn=all,ou=groups,dc=example,dc=com\nobjectClass: groupOfNames\ncn: all\nentryUUID: g"
    )
    .unwrap();
    for i in 0..n {
        writeln!(f, "member: uid=user{i},ou=people,dc=example,dc=com").unwrap();
    }
    f.flush().unwrap();
    drop(f);
    let start = std::time::Instant::now();
    let cfg = ldif_config("kind = \"ldif\"\npath = \"big.ldif\"\n");
    let snap = read(cfg, dir.path()).await.unwrap();
    assert_eq!(snap.users.len(), n);
    assert_eq!(snap.groups[0].members.len(), n);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
}
