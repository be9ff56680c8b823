//! `ironbridge source dump` (what the source sees, in ironbridge's model) and the source half
//! of `ironbridge check`. Password-like attributes are redacted in every dump.

use super::{DumpFormat, Exit};
use crate::config::Config;
use crate::model::{Entry, Snapshot, Value};
use crate::source::{self, SourceConfig};
use base64::Engine as _;
use std::fmt::Write as _;
use std::path::Path;

/// Attributes never printed (lower-case).
const REDACTED: &[&str] = &[
    "userpassword",
    "unicodepwd",
    "sambantpassword",
    "sambalmpassword",
    "krbprincipalkey",
    "ipanthash",
    "supplementalcredentials",
    "dbcspwd",
    "ntpwdhistory",
    "lmpwdhistory",
    "password",
];

fn redact(e: &mut Entry) {
    let names: Vec<String> = e
        .attrs
        .iter()
        .filter(|(n, _)| REDACTED.iter().any(|r| r.eq_ignore_ascii_case(n)))
        .map(|(n, _)| n.to_string())
        .collect();
    for n in names {
        e.attrs.set(&n, vec![Value::from("***redacted***")]);
    }
}

/// Reads the configured source once.
pub async fn read(cfg: &Config) -> anyhow::Result<Snapshot> {
    let Some(sc) = &cfg.source else {
        anyhow::bail!("{}: no [source] section", cfg.path.display());
    };
    let base = cfg.path.parent().unwrap_or(Path::new("."));
    let src = source::open(sc, base)?;
    Ok(src.read().await?)
}

/// Dumps the source.
pub async fn dump(config: &Path, format: DumpFormat, limit: Option<usize>) -> anyhow::Result<Exit> {
    let cfg = Config::load(config)?;
    let mut snap = read(&cfg).await?;
    if let Some(n) = limit {
        snap.users.truncate(n);
        snap.groups.truncate(n);
    }
    for u in &mut snap.users {
        redact(u);
    }
    for g in &mut snap.groups {
        redact(&mut g.entry);
    }
    // Written as it is serialized: a snapshot of 100,000 entries is hundreds of megabytes of
    // text, which is not worth holding in memory.
    use std::io::Write as _;
    let mut stdout = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    match format {
        DumpFormat::Json => serde_json::to_writer_pretty(&mut stdout, &snap)?,
        DumpFormat::Ldif => write_ldif(&snap, &mut stdout)?,
    }
    writeln!(stdout)?;
    stdout.flush()?;
    Ok(Exit::Ok)
}

/// Writes LDIF content records for a snapshot (RFC 2849: base64 where a value is not safe),
/// one record at a time.
fn write_ldif(snap: &Snapshot, w: &mut impl std::io::Write) -> std::io::Result<()> {
    w.write_all(b"version: 1\n")?;
    let mut out = String::new();
    let mut record = |e: &Entry, members: Option<&[String]>| {
        out.clear();
        let _ = writeln!(out, "\n# ironbridge id: {}", e.id);
        line(&mut out, "dn", &Value::text(e.locator.clone()));
        for (name, values) in e.attrs.iter() {
            for v in values {
                line(&mut out, name, v);
            }
        }
        for id in members.unwrap_or_default() {
            let _ = writeln!(out, "# member id: {id}");
        }
        w.write_all(out.as_bytes())
    };
    for u in &snap.users {
        record(u, None)?;
    }
    for g in &snap.groups {
        record(&g.entry, Some(&g.members))?;
    }
    Ok(())
}

fn safe(s: &str) -> bool {
    let b = s.as_bytes();
    b.first().is_none_or(|c| !matches!(c, b' ' | b':' | b'<'))
        && b.last() != Some(&b' ')
        && b.iter()
            .all(|c| (0x01..=0x7f).contains(c) && *c != b'\n' && *c != b'\r')
}

fn line(out: &mut String, name: &str, v: &Value) {
    match v {
        Value::Text(s) if safe(s) => {
            let _ = writeln!(out, "{name}: {s}");
        }
        Value::Text(s) => {
            let _ = writeln!(
                out,
                "{name}:: {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            );
        }
        Value::Binary(b) => {
            let _ = writeln!(
                out,
                "{name}:: {}",
                base64::engine::general_purpose::STANDARD.encode(b)
            );
        }
    }
}

/// Checks the source for `ironbridge check`: returns lines to print.
pub async fn check_source(sc: &SourceConfig, cfg: &Config) -> anyhow::Result<Vec<String>> {
    let base = cfg.path.parent().unwrap_or(Path::new("."));
    if let SourceConfig::Ldap(l) = sc {
        let src = source::ldap::LdapSource::open(l, base)?;
        let check = src.check().await?;
        return Ok(check.to_string().lines().map(str::to_string).collect());
    }
    let src = source::open(sc, base)?;
    let snap = src.read().await?;
    Ok(vec![format!(
        "source {}: ok, {} users and {} groups read",
        src.describe(),
        snap.users.len(),
        snap.groups.len()
    )])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Attributes;

    #[test]
    fn ldif_output_base64s_unsafe_values_and_redacts_passwords() {
        let mut attrs = Attributes::new();
        attrs.push("cn", "Zoë");
        attrs.push("userPassword", "hunter2");
        let mut e = Entry {
            id: "1".into(),
            locator: "uid=z,dc=x".into(),
            attrs,
        };
        redact(&mut e);
        let snap = Snapshot {
            source: "t".into(),
            read_at: chrono::Utc::now(),
            users: vec![e],
            groups: vec![],
        };
        let mut bytes = Vec::new();
        write_ldif(&snap, &mut bytes).unwrap();
        let out = String::from_utf8(bytes).unwrap();
        assert!(out.contains("cn:: Wm/Dqw=="), "{out}");
        assert!(!out.contains("hunter2"));
        assert!(out.contains("dn: uid=z,dc=x"));
    }
}
