//! `ironbridge source dump` (what the source sees, in ironbridge's model) and the source half
//! of `ironbridge check`. Password-like attributes are redacted in every dump.

use super::{DumpFormat, Exit};
use crate::config::Config;
use crate::model::{Entry, Snapshot, Value};
use crate::source::{self, SourceConfig};
use base64::Engine as _;
use serde::Serialize;
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

fn redact(e: &mut Entry) {
    let names: Vec<String> = e
        .attrs
        .iter()
        .filter(|(n, _)| crate::model::is_secret_attribute(n))
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
    let mut stdout = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    match format {
        DumpFormat::Json => write_json(&snap, &mut stdout, JSON_CHUNK)?,
        DumpFormat::Ldif => write_ldif(&snap, &mut stdout)?,
    }
    writeln!(stdout)?;
    stdout.flush()?;
    Ok(Exit::Ok)
}

/// Entries per piece of JSON text one thread serializes at a time.
const JSON_CHUNK: usize = 256;

/// Writes a snapshot as pretty JSON, byte for byte what `serde_json::to_writer_pretty` writes,
/// with the entries serialized by several threads in chunks of `chunk` and written in order.
/// At most three chunks per thread are held at once.
fn write_json(snap: &Snapshot, w: &mut impl Write, chunk: usize) -> std::io::Result<()> {
    w.write_all(b"{\n  \"source\": ")?;
    serde_json::to_writer(&mut *w, &snap.source)?;
    w.write_all(b",\n  \"read_at\": ")?;
    serde_json::to_writer(&mut *w, &snap.read_at)?;
    w.write_all(b",\n  \"users\": ")?;
    write_json_array(&snap.users, w, chunk)?;
    w.write_all(b",\n  \"groups\": ")?;
    write_json_array(&snap.groups, w, chunk)?;
    w.write_all(b"\n}")
}

/// Serializes `part` as elements of an array nested two levels deep; `first` says whether
/// it holds the array's first element.
fn render_json<T: Serialize>(part: &[T], first: bool, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.clear();
    for (i, item) in part.iter().enumerate() {
        buf.extend_from_slice(if first && i == 0 {
            b"\n    "
        } else {
            b",\n    "
        });
        let mut ser = serde_json::Serializer::with_formatter(&mut *buf, Nested::at(2));
        item.serialize(&mut ser)?;
    }
    Ok(())
}

fn write_json_array<T: Serialize + Sync>(
    items: &[T],
    w: &mut impl Write,
    chunk: usize,
) -> std::io::Result<()> {
    use std::sync::mpsc;
    if items.is_empty() {
        return w.write_all(b"[]");
    }
    w.write_all(b"[")?;
    let chunks: Vec<&[T]> = items.chunks(chunk.max(1)).collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
        .min(chunks.len());
    if threads == 1 {
        let mut buf = Vec::new();
        for (k, part) in chunks.iter().enumerate() {
            render_json(part, k == 0, &mut buf)?;
            w.write_all(&buf)?;
        }
    } else {
        std::thread::scope(|s| -> std::io::Result<()> {
            // Thread t serializes chunks t, t + threads, ...; this thread writes them in order
            // and hands each buffer back for reuse.
            let mut lanes = Vec::with_capacity(threads);
            for t in 0..threads {
                let (tx, rx) = mpsc::sync_channel::<std::io::Result<Vec<u8>>>(2);
                let (back_tx, back_rx) = mpsc::channel::<Vec<u8>>();
                let chunks = &chunks;
                s.spawn(move || {
                    // Each lane owns at most three buffers (two queued, one being written),
                    // reused from chunk to chunk, so their memory is touched only once.
                    for (n, k) in (t..chunks.len()).step_by(threads).enumerate() {
                        let mut buf = if n < 3 {
                            Vec::new()
                        } else {
                            match back_rx.recv() {
                                Ok(b) => b,
                                Err(_) => return,
                            }
                        };
                        let r = render_json(chunks[k], k == 0, &mut buf).map(|()| buf);
                        let failed = r.is_err();
                        if tx.send(r).is_err() || failed {
                            return;
                        }
                    }
                });
                lanes.push((rx, back_tx));
            }
            for k in 0..chunks.len() {
                let (rx, back) = &lanes[k % threads];
                let buf = rx
                    .recv()
                    .map_err(|_| std::io::Error::other("a serializing thread stopped"))??;
                w.write_all(&buf)?;
                let _ = back.send(buf);
            }
            Ok(())
        })?;
    }
    w.write_all(b"\n  ]")
}

/// `serde_json`'s pretty formatting (two spaces per level) starting at a given depth, so that
/// a value can be serialized on its own and still line up inside an enclosing document.
struct Nested {
    level: usize,
    has_value: bool,
}

impl Nested {
    fn at(level: usize) -> Self {
        Nested {
            level,
            has_value: false,
        }
    }

    fn indent<W: ?Sized + Write>(&self, w: &mut W) -> std::io::Result<()> {
        for _ in 0..self.level {
            w.write_all(b"  ")?;
        }
        Ok(())
    }

    /// Opens an array or object one level deeper.
    fn open<W: ?Sized + Write>(&mut self, w: &mut W, bracket: &[u8]) -> std::io::Result<()> {
        self.level += 1;
        self.has_value = false;
        w.write_all(bracket)
    }

    /// Closes an array or object, on a line of its own unless it is empty.
    fn close<W: ?Sized + Write>(&mut self, w: &mut W, bracket: &[u8]) -> std::io::Result<()> {
        self.level -= 1;
        if self.has_value {
            w.write_all(b"\n")?;
            self.indent(w)?;
        }
        w.write_all(bracket)
    }

    /// Starts an element or a key on a new line.
    fn item<W: ?Sized + Write>(&self, w: &mut W, first: bool) -> std::io::Result<()> {
        w.write_all(if first { b"\n" } else { b",\n" })?;
        self.indent(w)
    }
}

impl serde_json::ser::Formatter for Nested {
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"[")
    }

    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"]")
    }

    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.item(w, first)
    }

    fn end_array_value<W: ?Sized + Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"{")
    }

    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"}")
    }

    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.item(w, first)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
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

    #[test]
    fn parallel_json_is_exactly_serde_json_pretty() {
        use crate::model::Group;
        let entry = |i: usize| {
            let mut attrs = Attributes::new();
            attrs.push("cn", format!("User \"{i}\"\n").as_str());
            attrs.push("objectClass", "top");
            attrs.push("objectClass", "person");
            attrs.set("jpegPhoto", vec![Value::binary(vec![0u8, 1, 2])]);
            attrs.set("empty", Vec::<Value>::new());
            Entry {
                id: i.to_string(),
                locator: format!("uid=u{i},dc=x"),
                attrs,
            }
        };
        let cases = [(0, 0), (1, 0), (7, 3), (0, 2)];
        for (nu, ng) in cases {
            let snap = Snapshot {
                source: "ldap://x".into(),
                read_at: chrono::Utc::now(),
                users: (0..nu).map(entry).collect(),
                groups: (0..ng)
                    .map(|i| Group {
                        entry: entry(100 + i),
                        members: if i == 0 {
                            vec![]
                        } else {
                            vec!["1".into(), "2".into()]
                        },
                    })
                    .collect(),
            };
            let expected = serde_json::to_string_pretty(&snap).unwrap();
            for chunk in [1, 2, 3, 1024] {
                let mut out = Vec::new();
                write_json(&snap, &mut out, chunk).unwrap();
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    expected,
                    "{nu} users, {ng} groups, chunk {chunk}"
                );
            }
        }
    }
}
