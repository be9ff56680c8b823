#!/usr/bin/env bash
# LDAP read benchmark: a full read of 100,000 users and 200 groups from a private slapd by
# ironbridge's LDAP source, against `ldapsearch -E pr=1000/noprompt` reading the same entries
# and attributes, in the same run. Prints the median wall times (hyperfine), their ratio
# (goal: ironbridge <= 1.2x ldapsearch) and each side's peak RSS (GNU time).
#
# ironbridge side: `ironbridge source dump --config FILE --format json` when the binary has
# that command, otherwise the `ldap_read` example (same source code path, same JSON output).
#
# Needs: slapd + ldap-utils (Debian), hyperfine, openssl, GNU time, cargo.
# Knobs (environment): USERS (100000), NGROUPS (200), RUNS (5), PAGE (1000), KEEP=1 keeps the
# work directory.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

USERS=${USERS:-100000}
NGROUPS=${NGROUPS:-200}
RUNS=${RUNS:-5}
PAGE=${PAGE:-1000}

for tool in slapd slapadd ldapsearch hyperfine openssl; do
  if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
    echo "bench: $tool is missing (apt-get install slapd ldap-utils hyperfine openssl)" >&2
    exit 2
  fi
done
[ -x /usr/bin/time ] || { echo "bench: GNU time is missing (apt-get install time)" >&2; exit 2; }
PATH="$PATH:/usr/sbin"

WORK=$(mktemp -d /tmp/ironbridge-ldap-bench-XXXXXX)
cleanup() {
  if [ -f "$WORK/slapd.pid" ]; then
    pid=$(cat "$WORK/slapd.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "bench: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

echo "== building (release)" >&2
cargo build --release --quiet --bin ironbridge --example ldap_read

echo "== generating and loading $USERS users and $NGROUPS groups (offline slapadd)" >&2
mkdir -p "$WORK/slapd.d" "$WORK/db1" "$WORK/db2"
(
  cd "$WORK"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt \
    -days 30 -subj "/CN=bench CA" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
    -subj "/CN=127.0.0.1" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\n' > ext.cnf
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt \
    -days 30 -extfile ext.cnf 2>/dev/null
)
sed "s#@DIR@#$WORK#g" "$ROOT/tests/fixtures/ldap/slapd-config.ldif" > "$WORK/config.ldif"
slapadd -n0 -F "$WORK/slapd.d" -l "$WORK/config.ldif"

awk -v users="$USERS" -v groups="$NGROUPS" 'BEGIN {
  base = "dc=example,dc=test"
  print "dn: " base "\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n"
  print "dn: ou=people," base "\nobjectClass: organizationalUnit\nou: people\n"
  print "dn: ou=groups," base "\nobjectClass: organizationalUnit\nou: groups\n"
  print "dn: ou=system," base "\nobjectClass: organizationalUnit\nou: system\n"
  print "dn: uid=reader,ou=system," base "\nobjectClass: inetOrgPerson\nuid: reader\ncn: Reader\nsn: Reader\nuserPassword: bench-reader\n"
  for (i = 1; i <= users; i++) {
    uid = sprintf("user%06d", i)
    g = (i - 1) % groups
    printf "dn: uid=%s,ou=people,%s\nobjectClass: inetOrgPerson\nuid: %s\ncn: User %d\nsn: %d\ngivenName: User\n", uid, base, uid, i, i
    printf "displayName: User %d\nmail: %s@example.test\nemployeeNumber: %d\ntitle: Engineer %d\ntelephoneNumber: +1 555 %07d\n", i, uid, i, i % 50, i
    if (i % 100 == 0) printf "pwdAccountLockedTime: 000001010000Z\n"
    printf "memberOf: cn=group%03d,ou=groups,%s\n\n", g, base
  }
  for (g = 0; g < groups; g++) {
    printf "dn: cn=group%03d,ou=groups,%s\nobjectClass: groupOfNames\ncn: group%03d\n", g, base, g
    for (i = g + 1; i <= users; i += groups) printf "member: uid=user%06d,ou=people,%s\n", i, base
    printf "\n"
  }
}' > "$WORK/data.ldif"
t0=$(date +%s.%N)
slapadd -n1 -q -F "$WORK/slapd.d" -l "$WORK/data.ldif"
t1=$(date +%s.%N)
echo "   loaded in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s ($(du -sh "$WORK/db1" | cut -f1) database)" >&2
rm -f "$WORK/data.ldif"

PORT=""
for p in $(shuf -i 20000-60000 -n 50); do
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then PORT=$p; break; fi
done
[ -n "$PORT" ] || { echo "bench: no free port" >&2; exit 1; }
URL="ldap://127.0.0.1:$PORT"
slapd -F "$WORK/slapd.d" -h "$URL/"
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done

(umask 077; printf 'bench-reader' > "$WORK/reader.pw")
export IRONBRIDGE_BENCH_SECRET=unused
cat > "$WORK/bench.toml" <<EOF
version = 1

[ironclad]
base_url = "http://127.0.0.1:9"
auth = { method = "client_credentials", client_id = "bench", client_secret = { env = "IRONBRIDGE_BENCH_SECRET" } }

[source]
kind = "ldap"
url = "$URL"
bind_dn = "uid=reader,ou=system,dc=example,dc=test"
bind_password = { file = "reader.pw" }
page_size = $PAGE

[source.users]
base_dn = "ou=people,dc=example,dc=test"
filter = "(objectClass=inetOrgPerson)"
attributes = ["*", "memberOf", "pwdAccountLockedTime"]

[source.groups]
base_dn = "ou=groups,dc=example,dc=test"
filter = "(objectClass=groupOfNames)"
EOF

IB="$ROOT/target/release/ironbridge"
if "$IB" source dump --config "$WORK/bench.toml" --format json --limit 1 2>/dev/null | grep -q '"locator"'; then
  IB_CMD="$IB source dump --config $WORK/bench.toml --format json"
  IB_WHAT="ironbridge source dump --format json"
else
  IB_CMD="$ROOT/target/release/examples/ldap_read $WORK/bench.toml"
  IB_WHAT="examples/ldap_read (ironbridge source dump is not available in this build)"
fi

# ldapsearch reads exactly what the source asks for: users with * memberOf
# pwdAccountLockedTime plus the id attribute entryUUID; groups with * entryUUID member.
LS="ldapsearch -x -LLL -H $URL -D uid=reader,ou=system,dc=example,dc=test -y $WORK/reader.pw -E pr=$PAGE/noprompt"
LS_USERS="$LS -b ou=people,dc=example,dc=test '(objectClass=inetOrgPerson)' '*' memberOf pwdAccountLockedTime entryUUID"
LS_GROUPS="$LS -b ou=groups,dc=example,dc=test '(objectClass=groupOfNames)' '*' entryUUID member"
LS_CMD="$LS_USERS > /dev/null && $LS_GROUPS > /dev/null"

echo "== checking both read the same entries" >&2
ib_entries=$(sh -c "$IB_CMD" | grep -o '"locator":' | wc -l)
ls_entries=$(( $(sh -c "$LS_USERS" | grep -c '^dn:') + $(sh -c "$LS_GROUPS" | grep -c '^dn:') ))
echo "   ironbridge: $ib_entries entries, ldapsearch: $ls_entries entries" >&2
if [ "$ib_entries" != "$ls_entries" ] || [ "$ib_entries" != $((USERS + NGROUPS)) ]; then
  echo "bench: entry counts differ" >&2
  exit 1
fi

echo "== timing ($RUNS runs each, 1 warm-up)" >&2
hyperfine --style basic --warmup 1 --runs "$RUNS" --export-json "$WORK/hyperfine.json" \
  -n ironbridge "$IB_CMD > /dev/null" \
  -n ldapsearch "$LS_CMD" >&2

median() {
  # Median wall time (s) of the named command in hyperfine's JSON.
  awk -v name="$1" '
    /"command":/ { gsub(/[",]/, "", $2); cur = $2 }
    /"median":/ { gsub(/,/, "", $2); if (cur == name) print $2 }
  ' "$WORK/hyperfine.json"
}
IB_MED=$(median ironbridge)
LS_MED=$(median ldapsearch)
RATIO=$(awk -v a="$IB_MED" -v b="$LS_MED" 'BEGIN { printf "%.2f", a / b }')

peak_rss() {
  # Largest maximum resident set size (KiB) over three runs of a shell command.
  local max=0 kb
  for _ in 1 2 3; do
    kb=$( { /usr/bin/time -f '%M' sh -c "$1 > /dev/null" 2>&1 >/dev/null; } | tail -1)
    [ "$kb" -gt "$max" ] && max=$kb
  done
  echo "$max"
}
IB_RSS=$(peak_rss "$IB_CMD")
LS_RSS_U=$(peak_rss "$LS_USERS")
LS_RSS_G=$(peak_rss "$LS_GROUPS")
LS_RSS=$(( LS_RSS_U > LS_RSS_G ? LS_RSS_U : LS_RSS_G ))

cat <<EOF

LDAP full read: $USERS users + $NGROUPS groups, page size $PAGE, $(nproc) cores, load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)
  ironbridge ($IB_WHAT)
    median wall $(printf '%.3f' "$IB_MED") s, peak RSS $((IB_RSS / 1024)) MiB
  ldapsearch -E pr=$PAGE/noprompt (users search, then groups search)
    median wall $(printf '%.3f' "$LS_MED") s, peak RSS $((LS_RSS / 1024)) MiB
  ratio ironbridge / ldapsearch: ${RATIO}x (goal <= 1.2x)
EOF
