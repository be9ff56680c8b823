//! A real Active Directory domain controller for the AD tests: Debian's Samba, provisioned by
//! the test itself on 127.0.0.1 and loaded online with a small directory.
//!
//! AD's ports are fixed (389, 636, 88, ...), so there is one DC per machine: [`shared`] starts
//! it once per test binary and the Samba tests take [`serial`] so they run one at a time. The
//! DC lives in `target/samba-dc` (a fixed path, because the provisioned databases and
//! `smb.conf` record absolute paths). Provisioning (about 10 s) and loading the users online
//! (about 100 adds per second) happen once; the stopped DC is then archived as
//! `target/samba-dc-<key>.tar`, and later runs unpack it in under a second. The key covers the
//! Samba version and the generated LDIF, so a change to either provisions afresh.
//!
//! Samba runs in the foreground in its own process group; the same pipe watchdog as slapd's
//! (see `super::slapd::watchdog`) stops the whole group when the test process ends.
//!
//! The directory under `OU=ib,DC=example,DC=test`: 1,600 users `u00001`..`u01600`
//! (userAccountControl 544: enabled, no password), a disabled user (514), a user with a
//! non-ASCII name, the group `big` with all 1,600 users, nesting `eng` > `platform` > `sre`,
//! and a cycle `cycle-a` <-> `cycle-b`.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The domain's base DN.
pub const BASE: &str = "DC=example,DC=test";
/// Where the test objects are.
pub const OU: &str = "OU=ib,DC=example,DC=test";
/// The administrator's UPN (simple bind over plain LDAP is enabled for the tests).
pub const ADMIN: &str = "Administrator@EXAMPLE.TEST";
/// The administrator's password.
pub const ADMIN_PASSWORD: &str = "Ironbridge-Test-2024!";
/// Users generated.
pub const USERS: usize = 1600;
/// Bump when the generated directory changes in a way the LDIF text does not show.
const FIXTURE_VERSION: u32 = 1;

/// A running Samba AD DC.
pub struct SambaDc {
    pub dir: PathBuf,
    pub url: String,
    pub pid: u32,
    watchdog: Mutex<Option<ChildStdin>>,
}

static SHARED: OnceLock<SambaDc> = OnceLock::new();
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The DC shared by every Samba test of this binary (started on first use).
pub fn shared() -> &'static SambaDc {
    SHARED.get_or_init(start)
}

/// Held by each Samba test so they run one at a time.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// The generated directory as LDIF for `ldapadd` (order matters: members before groups).
pub fn fixture_ldif() -> String {
    let mut o = String::with_capacity(1 << 20);
    let _ = write!(o, "dn: {OU}\nobjectClass: organizationalUnit\nou: ib\n\n");
    for n in 1..=USERS {
        let _ = write!(
            o,
            "dn: CN=u{n:05},{OU}\nobjectClass: user\nsAMAccountName: u{n:05}\nuserPrincipalName: u{n:05}@example.test\ngivenName: User\nsn: {n}\nmail: u{n:05}@example.test\nuserAccountControl: 544\n\n"
        );
    }
    let _ = write!(
        o,
        "dn: CN=disabled1,{OU}\nobjectClass: user\nsAMAccountName: disabled1\nuserAccountControl: 514\n\n"
    );
    // "Zoë Ñúñez" needs base64 in LDIF.
    let _ = write!(
        o,
        "dn:: {}\nobjectClass: user\nsAMAccountName: zoe\ncn:: {}\nuserAccountControl: 544\n\n",
        b64(&format!("CN=Zoë Ñúñez,{OU}")),
        b64("Zoë Ñúñez")
    );
    let group = |o: &mut String, cn: &str, members: &[String]| {
        let _ = writeln!(
            o,
            "dn: CN={cn},{OU}\nobjectClass: group\nsAMAccountName: {cn}"
        );
        for m in members {
            let _ = writeln!(o, "member: {m}");
        }
        o.push('\n');
    };
    let users = |r: std::ops::RangeInclusive<usize>| -> Vec<String> {
        r.map(|n| format!("CN=u{n:05},{OU}")).collect()
    };
    group(&mut o, "big", &users(1..=USERS));
    group(&mut o, "sre", &users(21..=25));
    let mut platform = users(11..=20);
    platform.push(format!("CN=sre,{OU}"));
    group(&mut o, "platform", &platform);
    let mut eng = users(1..=10);
    eng.push(format!("CN=platform,{OU}"));
    group(&mut o, "eng", &eng);
    group(&mut o, "cycle-a", &users(31..=31));
    let mut b = users(32..=32);
    b.push(format!("CN=cycle-a,{OU}"));
    group(&mut o, "cycle-b", &b);
    o
}

/// The modification closing the cycle (cycle-a gets cycle-b as a member).
fn cycle_ldif() -> String {
    format!("dn: CN=cycle-a,{OU}\nchangetype: modify\nadd: member\nmember: CN=cycle-b,{OU}\n-\n\n")
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e}; scripts/test.sh installs Debian's samba packages")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `samba` daemon (in /usr/sbin, which a non-login PATH may lack).
fn samba_bin() -> PathBuf {
    ["/usr/sbin/samba", "/usr/local/sbin/samba"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("samba"))
}

fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                super::repo().join(p)
            }
        })
        .unwrap_or_else(|| super::repo().join("target"))
}

/// Adapts the provisioned smb.conf: simple binds over plain LDAP, everything under `dir`,
/// only the services the tests need, one worker, no fsync.
fn patch_smb_conf(dir: &Path) {
    let path = dir.join("etc/smb.conf");
    let text = std::fs::read_to_string(&path).unwrap();
    let d = dir.display();
    let extra = format!(
        "\tserver services = ldap cldap kdc rpc\n\tprefork children = 1\n\tldap server require strong auth = no\n\tpid directory = {d}/run\n\tlog file = {d}/log/log.%m\n\tncalrpc dir = {d}/ncalrpc\n\twinbindd socket directory = {d}/winbindd\n\tldb:nosync = true\n\tlog level = 1\n"
    );
    let kept: String = text
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !(t.starts_with("server services") || t.starts_with("log file"))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let patched = kept.replacen("[global]\n", &format!("[global]\n{extra}"), 1);
    std::fs::write(&path, patched).unwrap();
    for sub in ["run", "log", "ncalrpc", "winbindd"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
}

/// Starts samba from `dir` in its own process group; returns its pid once LDAP answers.
fn start_samba(dir: &Path) -> u32 {
    use std::os::unix::process::CommandExt as _;
    let log = std::fs::File::create(dir.join("log/samba.out")).unwrap();
    let child = Command::new(samba_bin())
        .args(["--foreground", "--no-process-group", "-s"])
        .arg(dir.join("etc/smb.conf"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("samba");
    let pid = child.id();
    // The child is reaped by nobody but the process ends with the test binary; keep it
    // detached from Rust's bookkeeping.
    std::mem::forget(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !listening(389) {
        assert!(
            Instant::now() < deadline,
            "Samba did not listen on 127.0.0.1:389 within 60 s; see {}/log",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    pid
}

/// Stops a samba started by [`start_samba`] (whole process group) and waits for port 389.
fn stop_samba(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", "--", &format!("-{pid}")])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while listening(389) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .status();
    // Let the processes go before the databases are archived.
    std::thread::sleep(Duration::from_millis(300));
}

fn ldap_modify(args: &[&str], ldif: &str, dir: &Path, name: &str) {
    let file = dir.join(name);
    std::fs::write(&file, ldif).unwrap();
    run(Command::new(args[0])
        .args(&args[1..])
        .args([
            "-x",
            "-H",
            "ldap://127.0.0.1",
            "-D",
            ADMIN,
            "-w",
            ADMIN_PASSWORD,
            "-f",
        ])
        .arg(&file));
}

fn cache_key(ldif: &str) -> String {
    use std::hash::{Hash, Hasher};
    let version = run(Command::new(samba_bin()).arg("-V"));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    version.hash(&mut h);
    ldif.hash(&mut h);
    FIXTURE_VERSION.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Provisions the domain into `dir`, loads the fixture online and stops the DC.
fn provision(dir: &Path, ldif: &str) {
    let t = Instant::now();
    run(Command::new("samba-tool")
        .args([
            "domain",
            "provision",
            "--realm=EXAMPLE.TEST",
            "--domain=EXAMPLE",
            "--server-role=dc",
            "--dns-backend=NONE",
            "--use-rfc2307",
            "--host-ip=127.0.0.1",
            "--option=interfaces=127.0.0.1",
            "--option=bind interfaces only=yes",
        ])
        .arg(format!("--adminpass={ADMIN_PASSWORD}"))
        .arg(format!("--targetdir={}", dir.display())));
    patch_smb_conf(dir);
    eprintln!("Samba AD DC provisioned in {:?}", t.elapsed());
    let pid = start_samba(dir);
    let t = Instant::now();
    ldap_modify(&["ldapadd"], ldif, dir, "fixture.ldif");
    ldap_modify(&["ldapmodify"], &cycle_ldif(), dir, "cycle.ldif");
    eprintln!("Samba fixture loaded online in {:?}", t.elapsed());
    stop_samba(pid);
}

fn start() -> SambaDc {
    let t0 = Instant::now();
    assert!(
        Command::new(samba_bin()).arg("-V").output().is_ok(),
        "samba is not installed: scripts/test.sh installs samba samba-ad-dc samba-ad-provision samba-dsdb-modules"
    );
    assert!(
        !listening(389),
        "127.0.0.1:389 is already in use (another Samba AD DC or LDAP server?); the AD tests need AD's fixed ports"
    );
    let target = target_dir();
    std::fs::create_dir_all(&target).unwrap();
    let dir = target.join("samba-dc");
    let ldif = fixture_ldif();
    let tar = target.join(format!("samba-dc-{}.tar", cache_key(&ldif)));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    if tar.exists() {
        run(Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(&target));
    } else {
        provision(&dir, &ldif);
        let tmp = tar.with_extension("tar.tmp");
        run(Command::new("tar")
            .arg("-cf")
            .arg(&tmp)
            .arg("-C")
            .arg(&target)
            .arg("samba-dc"));
        std::fs::rename(&tmp, &tar).unwrap();
    }
    let pid = start_samba(&dir);
    let mut stdin = super::slapd::watchdog_group(pid);
    let _ = stdin.flush();
    eprintln!(
        "Samba AD DC ready on ldap://127.0.0.1 in {:?}",
        t0.elapsed()
    );
    SambaDc {
        dir,
        url: "ldap://127.0.0.1".to_string(),
        pid,
        watchdog: Mutex::new(Some(stdin)),
    }
}

/// `samba-tool user show NAME` against the running DC, as text.
pub fn samba_tool_user_show(name: &str) -> String {
    run(Command::new("samba-tool")
        .args(["user", "show", name, "-H", "ldap://127.0.0.1", "-U", ADMIN])
        .arg(format!("--password={ADMIN_PASSWORD}")))
}
