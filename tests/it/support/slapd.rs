//! A private OpenLDAP `slapd` for the LDAP tests, loaded with a generated directory.
//!
//! How it runs: a temporary directory gets a `cn=config` built offline from
//! `tests/fixtures/ldap/slapd-config.ldif` (`slapadd -n0`), a test CA and a server certificate
//! for 127.0.0.1 (openssl CLI), and the data loaded offline (`slapadd -n1`/`-n2`, carrying
//! `memberOf` values because slapadd bypasses overlays). `slapd` then listens on
//! `ldap://127.0.0.1:P` and `ldaps://127.0.0.1:P2` (two free ports).
//!
//! One instance serves the whole test binary ([`shared`], started lazily in a `OnceLock`).
//! Statics are never dropped, so cleanup is guaranteed another way: a watchdog shell in its
//! own process group, ignoring terminal signals, blocks reading a pipe whose only writer is
//! this test process. When the process ends for any reason (tests done, panic, abort,
//! SIGKILL) the kernel closes the pipe, `read` returns, and the watchdog kills slapd and
//! removes the directory.
//!
//! The generated directory ([`Fixture`]): 10,000 regular users (every 500th disabled with
//! `pwdAccountLockedTime`), users with non-ASCII names, values that need base64 in LDIF, a
//! binary `jpegPhoto`, a DN with an escaped comma; groups with more than 1,500 members,
//! nesting three deep, a two-group cycle, members outside the users search, a
//! groupOfUniqueNames and a posixGroup. Stable ids (`entryUUID`) are set by the generator, so
//! tests know them.
#![allow(dead_code)]

use super::free_port;
use base64::Engine as _;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The main suffix.
pub const BASE: &str = "dc=example,dc=test";
/// Where users are.
pub const PEOPLE: &str = "ou=people,dc=example,dc=test";
/// Where groupOfNames / groupOfUniqueNames groups are.
pub const GROUPS: &str = "ou=groups,dc=example,dc=test";
/// Where the posixGroup is.
pub const POSIX: &str = "ou=posix,dc=example,dc=test";
/// A branch with one user and a referral to another server (`ou=elsewhere`), for the
/// referral tests.
pub const PARTNER: &str = "ou=partner,dc=example,dc=test";
/// The service account the tests bind as (not the rootDN, so server limits apply to it).
pub const READER_DN: &str = "uid=reader,ou=system,dc=example,dc=test";
/// Its password.
pub const READER_PASSWORD: &str = "reader-secret-9f2c";
/// The second database: 30 users, size limit 10, no anonymous access.
pub const LIMITED: &str = "dc=limited,dc=test";
/// Regular users generated.
pub const REGULAR_USERS: usize = 10_000;

/// One generated user.
#[derive(Debug, Clone)]
pub struct FxUser {
    pub dn: String,
    pub uid: String,
    pub uuid: String,
    pub cn: String,
    pub disabled: bool,
    pub jpeg: Option<Vec<u8>>,
    pub description: Vec<String>,
}

/// A member as the generator means it.
#[derive(Debug, Clone)]
pub enum Member {
    /// Index into `Fixture::users`.
    User(usize),
    /// Index into `Fixture::groups`.
    Group(usize),
    /// A DN outside the users and groups searches (or not existing at all).
    Outside(String),
}

/// One generated group.
#[derive(Debug, Clone)]
pub struct FxGroup {
    pub dn: String,
    pub cn: String,
    pub uuid: String,
    /// `groupOfNames`, `groupOfUniqueNames` or `posixGroup`.
    pub class: &'static str,
    pub members: Vec<Member>,
}

/// The whole generated directory.
#[derive(Debug, Clone, Default)]
pub struct Fixture {
    pub users: Vec<FxUser>,
    pub groups: Vec<FxGroup>,
    /// posixGroups (under [`POSIX`]): members are written as `memberUid`.
    pub posix: Vec<FxGroup>,
}

impl Fixture {
    pub fn user(&self, uid: &str) -> &FxUser {
        self.users.iter().find(|u| u.uid == uid).unwrap()
    }
    pub fn group(&self, cn: &str) -> &FxGroup {
        self.groups
            .iter()
            .chain(self.posix.iter())
            .find(|g| g.cn == cn)
            .unwrap()
    }
    /// The ids a correct reader resolves a group's direct members to (sorted).
    pub fn expected_members(&self, g: &FxGroup) -> Vec<String> {
        let mut ids: Vec<String> = g
            .members
            .iter()
            .filter_map(|m| match m {
                Member::User(i) => Some(self.users[*i].uuid.clone()),
                Member::Group(i) => Some(self.groups[*i].uuid.clone()),
                Member::Outside(_) => None,
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

fn uuid(kind: u32, n: usize) -> String {
    format!("{kind:08x}-0000-4000-8000-{n:012x}")
}

/// Generates the fixture (deterministic).
pub fn generate() -> Fixture {
    let mut fx = Fixture::default();
    for n in 1..=REGULAR_USERS {
        let uid = format!("user{n:05}");
        fx.users.push(FxUser {
            dn: format!("uid={uid},{PEOPLE}"),
            cn: format!("User {n}"),
            uid,
            uuid: uuid(1, n),
            disabled: n % 500 == 0,
            jpeg: None,
            description: Vec::new(),
        });
    }
    let special = |fx: &mut Fixture, dn: String, uid: &str, cn: &str, description: Vec<&str>| {
        let n = fx.users.len() + 1;
        fx.users.push(FxUser {
            dn,
            uid: uid.to_string(),
            uuid: uuid(1, n),
            cn: cn.to_string(),
            disabled: false,
            jpeg: None,
            description: description.into_iter().map(String::from).collect(),
        });
        n - 1
    };
    let zoe = special(
        &mut fx,
        format!("uid=zoe,{PEOPLE}"),
        "zoe",
        "Zoë Ñúñez",
        vec![],
    );
    let lilei = special(
        &mut fx,
        format!("uid=lilei,{PEOPLE}"),
        "lilei",
        "李雷",
        vec![],
    );
    let doe = special(
        &mut fx,
        format!("cn=Doe\\, Jane,{PEOPLE}"),
        "jdoe",
        "Doe, Jane",
        vec![],
    );
    let odd = special(
        &mut fx,
        format!("uid=odd,{PEOPLE}"),
        "odd",
        "Odd Values",
        vec![
            " starts with a space",
            "ends with a space ",
            ":starts with a colon",
            "<starts with a less-than",
            "two\nlines",
        ],
    );
    let photo = special(
        &mut fx,
        format!("uid=photo,{PEOPLE}"),
        "photo",
        "Photo Person",
        vec![],
    );
    fx.users[photo].jpeg = Some(vec![
        0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x80, 0xfe,
    ]);

    let mut groups: Vec<FxGroup> = Vec::new();
    let mut add_group = |cn: &str, class: &'static str, members: Vec<Member>| {
        let n = groups.len() + 1;
        groups.push(FxGroup {
            dn: format!("cn={cn},{GROUPS}"),
            cn: cn.to_string(),
            uuid: uuid(2, n),
            class,
            members,
        });
        n - 1
    };
    let u = |n: usize| Member::User(n - 1);
    add_group("all-staff", "groupOfNames", (1..=2000).map(u).collect());
    for d in 0..20 {
        add_group(
            &format!("dept-{d:02}"),
            "groupOfNames",
            ((d * 500 + 1)..=(d * 500 + 500)).map(u).collect(),
        );
    }
    // Nesting: engineering > platform > sre; a cycle: cycle-a <-> cycle-b.
    let sre = add_group("sre", "groupOfNames", (21..=25).map(u).collect());
    let mut platform_members: Vec<Member> = (11..=20).map(u).collect();
    platform_members.push(Member::Group(sre));
    let platform = add_group("platform", "groupOfNames", platform_members);
    let mut eng: Vec<Member> = (1..=10).map(u).collect();
    eng.push(Member::Group(platform));
    add_group("engineering", "groupOfNames", eng);
    let cycle_a = add_group("cycle-a", "groupOfNames", vec![u(31)]);
    let cycle_b = add_group(
        "cycle-b",
        "groupOfNames",
        vec![u(32), Member::Group(cycle_a)],
    );
    add_group(
        "international",
        "groupOfNames",
        vec![
            Member::User(zoe),
            Member::User(lilei),
            Member::User(doe),
            Member::User(odd),
        ],
    );
    add_group(
        "with-outsiders",
        "groupOfNames",
        vec![
            u(40),
            Member::Outside(READER_DN.to_string()),
            Member::Outside(format!("uid=ghost,{PEOPLE}")),
        ],
    );
    add_group("unique", "groupOfUniqueNames", (50..=54).map(u).collect());
    groups[cycle_a].members.push(Member::Group(cycle_b));
    fx.groups = groups;
    fx.posix.push(FxGroup {
        dn: format!("cn=posix-devs,{POSIX}"),
        cn: "posix-devs".into(),
        uuid: uuid(3, 1),
        class: "posixGroup",
        members: vec![u(60), u(61), Member::Outside("nobody".into())],
    });
    fx
}

/// `name: value`, or `name:: base64` when RFC 2849 requires it.
fn attr(out: &mut String, name: &str, value: &[u8]) {
    let safe = !value.is_empty()
        && value
            .iter()
            .all(|&b| (0x01..0x80).contains(&b) && b != b'\n' && b != b'\r')
        && !matches!(value[0], b' ' | b':' | b'<')
        && value[value.len() - 1] != b' ';
    if safe || value.is_empty() {
        let _ = writeln!(out, "{name}: {}", String::from_utf8_lossy(value));
    } else {
        let _ = writeln!(
            out,
            "{name}:: {}",
            base64::engine::general_purpose::STANDARD.encode(value)
        );
    }
}

/// The DN of a member as written in the group, deliberately in varied but equivalent
/// spellings (case, spaces after commas, hex escapes) so that DN normalisation is exercised.
fn written_dn(fx: &Fixture, m: &Member, n: usize) -> String {
    let dn = match m {
        Member::User(i) => fx.users[*i].dn.clone(),
        Member::Group(i) => fx.groups[*i].dn.clone(),
        Member::Outside(dn) => return dn.clone(),
    };
    match n % 3 {
        0 => dn,
        1 => dn.replace(",ou=", ", OU=").replace("dc=", "DC="),
        _ => dn
            .replace("\\,", "\\2C")
            .to_uppercase()
            .replace("\\2C", "\\2c"),
    }
}

/// The LDIF of database 1 (dc=example,dc=test).
pub fn ldif_main(fx: &Fixture) -> String {
    let mut o = String::with_capacity(4 << 20);
    o.push_str(&format!(
        "dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n"
    ));
    for ou in ["people", "groups", "posix", "system"] {
        o.push_str(&format!(
            "dn: ou={ou},{BASE}\nobjectClass: organizationalUnit\nou: {ou}\n\n"
        ));
    }
    o.push_str(&format!(
        "dn: {READER_DN}\nobjectClass: inetOrgPerson\nuid: reader\ncn: Reader\nsn: Reader\nuserPassword: {READER_PASSWORD}\nentryUUID: {}\n\n",
        uuid(4, 1)
    ));
    // memberOf as the overlay would have written it (direct groupOfNames membership).
    let mut member_of_users: Vec<Vec<usize>> = vec![Vec::new(); fx.users.len()];
    let mut member_of_groups: Vec<Vec<usize>> = vec![Vec::new(); fx.groups.len()];
    for (gi, g) in fx.groups.iter().enumerate() {
        if g.class != "groupOfNames" {
            continue;
        }
        for m in &g.members {
            match m {
                Member::User(i) => member_of_users[*i].push(gi),
                Member::Group(i) => member_of_groups[*i].push(gi),
                Member::Outside(_) => {}
            }
        }
    }
    for (i, u) in fx.users.iter().enumerate() {
        attr(&mut o, "dn", u.dn.as_bytes());
        o.push_str("objectClass: inetOrgPerson\n");
        attr(&mut o, "uid", u.uid.as_bytes());
        attr(&mut o, "cn", u.cn.as_bytes());
        let sn = u.cn.split_whitespace().last().unwrap_or("X");
        attr(&mut o, "sn", sn.as_bytes());
        attr(
            &mut o,
            "givenName",
            u.cn.split_whitespace().next().unwrap_or("X").as_bytes(),
        );
        let _ = writeln!(o, "mail: {}@example.test", u.uid);
        let _ = writeln!(o, "employeeNumber: {}", i + 1);
        attr(&mut o, "displayName", u.cn.as_bytes());
        for d in &u.description {
            attr(&mut o, "description", d.as_bytes());
        }
        if let Some(j) = &u.jpeg {
            attr(&mut o, "jpegPhoto", j);
        }
        if u.disabled {
            o.push_str("pwdAccountLockedTime: 000001010000Z\n");
        }
        let _ = writeln!(o, "entryUUID: {}", u.uuid);
        for gi in &member_of_users[i] {
            attr(&mut o, "memberOf", fx.groups[*gi].dn.as_bytes());
        }
        o.push('\n');
    }
    for (gi, g) in fx.groups.iter().enumerate() {
        attr(&mut o, "dn", g.dn.as_bytes());
        let _ = writeln!(o, "objectClass: {}", g.class);
        let _ = writeln!(o, "cn: {}", g.cn);
        let _ = writeln!(o, "entryUUID: {}", g.uuid);
        let member_attr = if g.class == "groupOfUniqueNames" {
            "uniqueMember"
        } else {
            "member"
        };
        for (n, m) in g.members.iter().enumerate() {
            let mut dn = written_dn(fx, m, n);
            if member_attr == "uniqueMember" && n == 0 {
                dn.push_str("#'0101'B");
            }
            attr(&mut o, member_attr, dn.as_bytes());
        }
        for pi in &member_of_groups[gi] {
            attr(&mut o, "memberOf", fx.groups[*pi].dn.as_bytes());
        }
        o.push('\n');
    }
    o.push_str(&format!(
        "dn: {PARTNER}\nobjectClass: organizationalUnit\nou: partner\n\n\
         dn: uid=partner1,{PARTNER}\nobjectClass: inetOrgPerson\nuid: partner1\ncn: Partner One\nsn: One\nentryUUID: {}\n\n\
         dn: ou=elsewhere,{PARTNER}\nobjectClass: referral\nobjectClass: extensibleObject\nou: elsewhere\nref: ldap://directory.partner.test/ou=elsewhere,dc=partner,dc=test\n\n",
        uuid(6, 1)
    ));
    for (n, g) in fx.posix.iter().enumerate() {
        attr(&mut o, "dn", g.dn.as_bytes());
        o.push_str("objectClass: posixGroup\n");
        let _ = writeln!(o, "cn: {}", g.cn);
        let _ = writeln!(o, "gidNumber: {}", 5000 + n);
        let _ = writeln!(o, "entryUUID: {}", g.uuid);
        for (k, m) in g.members.iter().enumerate() {
            let uid = match m {
                Member::User(i) if k % 2 == 1 => fx.users[*i].uid.to_uppercase(),
                Member::User(i) => fx.users[*i].uid.clone(),
                Member::Group(_) => continue,
                Member::Outside(s) => s.clone(),
            };
            attr(&mut o, "memberUid", uid.as_bytes());
        }
        o.push('\n');
    }
    o
}

/// The LDIF of database 2 (dc=limited,dc=test): 30 users, and two groups: `limited-all`
/// (all 30) and `limited-few` (l01 and l02).
pub fn ldif_limited() -> String {
    let mut o = format!(
        "dn: {LIMITED}\nobjectClass: dcObject\nobjectClass: organization\ndc: limited\no: Limited\n\ndn: ou=people,{LIMITED}\nobjectClass: organizationalUnit\nou: people\n\n"
    );
    for n in 1..=30 {
        let _ = write!(
            o,
            "dn: uid=l{n:02},ou=people,{LIMITED}\nobjectClass: inetOrgPerson\nuid: l{n:02}\ncn: Limited {n}\nsn: {n}\nentryUUID: {}\n\n",
            uuid(5, n)
        );
    }
    let _ = write!(
        o,
        "dn: ou=groups,{LIMITED}\nobjectClass: organizationalUnit\nou: groups\n\n\
         dn: cn=limited-all,ou=groups,{LIMITED}\nobjectClass: groupOfNames\ncn: limited-all\nentryUUID: {}\n",
        uuid(7, 1)
    );
    for n in 1..=30 {
        let _ = writeln!(o, "member: uid=l{n:02},ou=people,{LIMITED}");
    }
    let _ = write!(
        o,
        "\ndn: cn=limited-few,ou=groups,{LIMITED}\nobjectClass: groupOfNames\ncn: limited-few\nentryUUID: {}\n\
         member: uid=l01,ou=people,{LIMITED}\nmember: uid=l02,ou=people,{LIMITED}\n\n",
        uuid(7, 2)
    );
    o
}

/// A running private slapd.
pub struct Slapd {
    pub dir: PathBuf,
    pub port: u16,
    pub tls_port: u16,
    pub ldap_url: String,
    pub ldaps_url: String,
    /// PEM of the CA that signed the server certificate.
    pub ca_file: PathBuf,
    pub pid: u32,
    pub fixture: Fixture,
    /// Write end of the watchdog's pipe; closing it (process exit) stops slapd.
    watchdog: Mutex<Option<ChildStdin>>,
}

impl Slapd {
    /// Stops slapd now (for dedicated instances; the shared one stops at process exit).
    pub fn stop(&self) {
        if let Ok(mut w) = self.watchdog.lock() {
            w.take();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

static SHARED: OnceLock<Slapd> = OnceLock::new();

/// The slapd shared by every test of this binary (started on first use).
pub fn shared() -> &'static Slapd {
    SHARED.get_or_init(|| start(generate()))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e}; scripts/test.sh installs slapd and ldap-utils")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn slap_tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/local/sbin", "/usr/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not found: run scripts/test.sh, which installs Debian's slapd");
}

/// Writes a test CA and a server certificate for 127.0.0.1 into `dir`.
pub fn make_certs(dir: &Path) {
    let ossl = |args: &[&str]| {
        run(Command::new("openssl").args(args).current_dir(dir));
    };
    ossl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "3650",
        "-subj",
        "/CN=ironbridge test CA",
    ]);
    ossl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    ossl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "3650",
        "-extfile",
        "ext.cnf",
    ]);
}

/// Starts a watchdog that kills `pid` and removes `dir` when the returned pipe closes.
pub fn watchdog(pid: u32, dir: &Path) -> ChildStdin {
    spawn_watchdog(&pid.to_string(), &format!("rm -rf '{}'", dir.display()))
}

/// Starts a watchdog that kills the process group `pgid` when the returned pipe closes.
pub fn watchdog_group(pgid: u32) -> ChildStdin {
    spawn_watchdog(&format!("-{pgid}"), "true")
}

/// The watchdog shell: its own process group (no terminal signal reaches it), ignores
/// INT/TERM/HUP, blocks on `read` until this process's end closes the pipe, then sends TERM,
/// waits up to 5 s, sends KILL and runs `cleanup`. It normally outlives this process, so it
/// is never waited for.
#[allow(clippy::zombie_processes)]
fn spawn_watchdog(target: &str, cleanup: &str) -> ChildStdin {
    use std::os::unix::process::CommandExt as _;
    let script = format!(
        "trap '' INT TERM HUP; read _; kill -TERM {target} 2>/dev/null; i=0; while kill -0 {target} 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; kill -KILL {target} 2>/dev/null; {cleanup}"
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn watchdog");
    child.stdin.take().expect("watchdog stdin")
}

/// Starts a private slapd loaded with `fx` (and the limited database).
pub fn start(fx: Fixture) -> Slapd {
    let t0 = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("ironbridge-slapd-")
        .tempdir()
        .unwrap()
        .keep();
    for d in ["slapd.d", "db1", "db2"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    make_certs(&dir);
    let template =
        std::fs::read_to_string(super::repo().join("tests/fixtures/ldap/slapd-config.ldif"))
            .unwrap();
    std::fs::write(
        dir.join("config.ldif"),
        template.replace("@DIR@", &dir.display().to_string()),
    )
    .unwrap();
    let slapadd = slap_tool("slapadd");
    run(Command::new(&slapadd)
        .args(["-n0", "-F"])
        .arg(dir.join("slapd.d"))
        .arg("-l")
        .arg(dir.join("config.ldif")));
    std::fs::write(dir.join("main.ldif"), ldif_main(&fx)).unwrap();
    std::fs::write(dir.join("limited.ldif"), ldif_limited()).unwrap();
    for (n, file) in [("-n1", "main.ldif"), ("-n2", "limited.ldif")] {
        run(Command::new(&slapadd)
            .args([n, "-q", "-F"])
            .arg(dir.join("slapd.d"))
            .arg("-l")
            .arg(dir.join(file)));
    }
    let port = free_port();
    let tls_port = free_port();
    let ldap_url = format!("ldap://127.0.0.1:{port}");
    let ldaps_url = format!("ldaps://127.0.0.1:{tls_port}");
    run(Command::new(slap_tool("slapd"))
        .arg("-F")
        .arg(dir.join("slapd.d"))
        .arg("-h")
        .arg(format!("{ldap_url}/ {ldaps_url}/")));
    // slapd daemonises; its pid file appears once it is up.
    let pid_file = dir.join("slapd.pid");
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid = loop {
        if let Ok(s) = std::fs::read_to_string(&pid_file) {
            if let Ok(pid) = s.trim().parse::<u32>() {
                break pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "slapd did not write {}",
            pid_file.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stdin = watchdog(pid, &dir);
    let _ = stdin.flush();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "slapd did not listen on {port}");
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "slapd {ldap_url} started with {} users in {:?} ({})",
        fx.users.len(),
        t0.elapsed(),
        dir.display()
    );
    Slapd {
        ca_file: dir.join("ca.crt"),
        dir,
        port,
        tls_port,
        ldap_url,
        ldaps_url,
        pid,
        fixture: fx,
        watchdog: Mutex::new(Some(stdin)),
    }
}

/// The administrator of database 1 (the rootDN), for tests that change the directory.
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=test";
/// Its password.
pub const ADMIN_PASSWORD: &str = "admin-secret";

static SMALL: OnceLock<Slapd> = OnceLock::new();

/// A second shared slapd with no generated people (only the suffix, its organizational units
/// and the reader account): tests that change the directory each add their own subtree to it
/// and so stay isolated from one another and from the large fixture.
pub fn small() -> &'static Slapd {
    SMALL.get_or_init(|| start(Fixture::default()))
}

impl Slapd {
    /// Runs `ldapadd`/`ldapmodify` (`tool`) as the rootDN with `ldif` on standard input.
    pub fn admin(&self, tool: &str, ldif: &str) {
        let mut child = Command::new(tool)
            .args([
                "-x",
                "-H",
                &self.ldap_url,
                "-D",
                ADMIN_DN,
                "-w",
                ADMIN_PASSWORD,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {tool}: {e}; scripts/test.sh installs ldap-utils")
            });
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ldif.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{tool} failed: {}{}\n{ldif}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Deletes entries (`ldapdelete -r`, so a subtree goes too) as the rootDN.
    pub fn admin_delete(&self, dns: &[&str]) {
        let mut cmd = Command::new("ldapdelete");
        cmd.args([
            "-x",
            "-r",
            "-H",
            &self.ldap_url,
            "-D",
            ADMIN_DN,
            "-w",
            ADMIN_PASSWORD,
        ])
        .args(dns);
        run(&mut cmd);
    }

    /// One attribute's values of one entry (operational ones too), read as the rootDN.
    pub fn values(&self, dn: &str, attr: &str) -> Vec<String> {
        let out = run(Command::new("ldapsearch")
            .args(["-x", "-LLL", "-o", "ldif-wrap=no", "-H", &self.ldap_url])
            .args(["-D", ADMIN_DN, "-w", ADMIN_PASSWORD, "-s", "base", "-b", dn])
            .arg(attr));
        let prefix = format!("{}: ", attr.to_lowercase());
        out.lines()
            .filter(|l| l.to_lowercase().starts_with(&prefix))
            .map(|l| l[prefix.len()..].to_string())
            .collect()
    }
}
