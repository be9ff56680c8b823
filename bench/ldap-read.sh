#!/usr/bin/env bash
# LDAP read benchmark: a full read of 100,000 users and 200 groups from a private slapd by
# ironbridge's LDAP source, against `ldapsearch -E pr=1000/noprompt` reading the same entries
# and attributes, in the same run. Prints the median wall times (hyperfine), their ratio
# (goal: ironbridge <= 1.2x ldapsearch) and each side's peak RSS (GNU time).
#
# ironbridge side: `ironbridge source dump --config FILE --format json`.
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

. "$ROOT/bench/lib.sh"
bench_need slapd slapadd ldapsearch hyperfine openssl

WORK=$(mktemp -d /tmp/ironbridge-ldap-bench-XXXXXX)
cleanup() {
  bench_stop_slapd
  if [ "${KEEP:-0}" = 1 ]; then echo "bench: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

echo "== building (release)" >&2
cargo build --release --quiet --bin ironbridge

echo "== generating and loading $USERS users and $NGROUPS groups (offline slapadd)" >&2
bench_directory_ldif "$USERS" "$NGROUPS" > "$WORK/data.ldif"
bench_start_slapd "$WORK/data.ldif"
rm -f "$WORK/data.ldif"
URL=$SLAPD_URL
export IRONBRIDGE_BENCH_SECRET=unused
{
  printf 'version = 1\n\n[ironclad]\nbase_url = "http://127.0.0.1:9"\n'
  printf 'auth = { method = "bearer_token", token = { env = "IRONBRIDGE_BENCH_SECRET" } }\n\n'
  bench_source_toml '["*", "memberOf", "pwdAccountLockedTime"]'
} > "$WORK/bench.toml"

IB_CMD="$ROOT/target/release/ironbridge source dump --config $WORK/bench.toml --format json"
IB_WHAT="ironbridge source dump --format json"

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

IB_MED=$(bench_median "$WORK/hyperfine.json" ironbridge)
LS_MED=$(bench_median "$WORK/hyperfine.json" ldapsearch)
RATIO=$(bench_ratio "$IB_MED" "$LS_MED")
IB_RSS=$(bench_peak_rss "$IB_CMD")
LS_RSS_U=$(bench_peak_rss "$LS_USERS")
LS_RSS_G=$(bench_peak_rss "$LS_GROUPS")
LS_RSS=$(( LS_RSS_U > LS_RSS_G ? LS_RSS_U : LS_RSS_G ))

cat <<EOF

LDAP full read: $USERS users + $NGROUPS groups, page size $PAGE, $(nproc) cores, load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)
  ironbridge ($IB_WHAT)
    median wall $(printf '%.3f' "$IB_MED") s, peak RSS $((IB_RSS / 1024)) MiB
  ldapsearch -E pr=$PAGE/noprompt (users search, then groups search)
    median wall $(printf '%.3f' "$LS_MED") s, peak RSS $((LS_RSS / 1024)) MiB
  ratio ironbridge / ldapsearch: ${RATIO}x (goal <= 1.2x)
EOF
