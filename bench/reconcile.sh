#!/usr/bin/env bash
# Reconciliation benchmarks (ironbridge apply against ironclad-sim), two parts:
#
# 1. No-op reconcile of USERS people: a private slapd (generated directory) -> ironclad-sim
#    already holding the converged users. Times `ironbridge apply --yes` with nothing to do
#    against the larger of (a) ldapsearch reading the same entries and attributes and (b) one
#    curl paging through every simulator user (1000 per page), in the same run (hyperfine
#    medians). Checks from the simulator's request log that the run made exactly
#    ceil(N/1000) user list calls and no write; records peak RSS (GNU time).
# 2. Writes: 1,000 updates and 100 removals (deactivations) against the simulator's limits
#    scaled x60 (600 PUT/POST and 50 PATCH/DELETE per second), from LDIF sources. Times
#    `ironbridge apply` with the default balanced PUT/PATCH split and with `write_method =
#    "patch"` (PATCH only, as identity providers write), each against the bound the two
#    buckets allow: the whole windows that must pass before the last requests may be sent,
#    plus the time the simulator takes to answer those last requests when curl sends them all
#    at once to a simulator without limits (measured in the same run). Counts 429 answers.
#
# Needs: slapd + ldap-utils (Debian), hyperfine, openssl, curl, GNU time, cargo.
# Knobs (environment): USERS (100000), NGROUPS (200), RUNS (5), WRITE_RUNS (3), PAGE (1000),
# PART (all | noop | writes), KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

USERS=${USERS:-100000}
NGROUPS=${NGROUPS:-200}
RUNS=${RUNS:-5}
WRITE_RUNS=${WRITE_RUNS:-3}
PAGE=${PAGE:-1000}
PART=${PART:-all}

. "$ROOT/bench/lib.sh"
bench_need slapd slapadd ldapsearch hyperfine openssl curl

WORK=$(mktemp -d /tmp/ironbridge-reconcile-bench-XXXXXX)
SIM_PID=""
stop_sim() {
  if [ -n "$SIM_PID" ]; then
    kill "$SIM_PID" 2>/dev/null || true
    wait "$SIM_PID" 2>/dev/null || true
    SIM_PID=""
  fi
}
cleanup() {
  stop_sim
  bench_stop_slapd
  if [ "${KEEP:-0}" = 1 ]; then echo "bench: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

echo "== building (release)" >&2
cargo build --release --quiet --bin ironbridge --bin ironclad-sim
IB="$ROOT/target/release/ironbridge"
SIM="$ROOT/target/release/ironclad-sim"
SCOPES="scim.users.readUsers,scim.users.createUsers,scim.users.updateUsers,scim.users.deleteUsers,scim.groups.readGroups,scim.groups.createGroups,scim.groups.updateGroups"
TOKEN="bench-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
export IRONBRIDGE_BENCH_TOKEN=$TOKEN

# Starts the simulator on a free port with the bench token; extra arguments are passed on.
# Sets SIM_URL and SIM_PID.
start_sim() {
  local port
  port=$(bench_free_port)
  "$SIM" --listen "127.0.0.1:$port" --token "$TOKEN:$SCOPES" "$@" > "$WORK/sim.log" 2>&1 &
  SIM_PID=$!
  SIM_URL="http://127.0.0.1:$port"
  bench_wait_port "$port"
}

# The [ironclad] section for the simulator, with per-minute limits $1 (PUT/POST/GET) and $2
# (PATCH/DELETE).
ironclad_toml() {
  cat <<EOF
version = 1

[ironclad]
base_url = "$SIM_URL"
page_size = 1000
auth = { method = "bearer_token", token = { env = "IRONBRIDGE_BENCH_TOKEN" } }

[ironclad.rate_limits]
users_read_write = $1
users_patch_delete = $2
groups = $1
other = $1
window_secs = $4

[mapping]
file = "$ROOT/bench/fixtures/bench-mapping.toml"

[state]
path = "$WORK/state-$3.db"
audit_log = "$WORK/audit-$3.jsonl"

[policy]
remove_users = "deactivate"
max_removals = 1000
max_removal_percent = 50
EOF
}

# Requests in the simulator's log since it was last cleared, as "METHOD PATH STATUS" lines.
sim_log() {
  curl -s "$SIM_URL/_sim/requests" | python3 -c '
import json, sys
for r in json.load(sys.stdin):
    print(r["method"], r["path"], r["status"])'
}

# Where the time of one run went, from the simulator's request log (arrival times, ms) and the
# run's start and end ($1, $2: epoch seconds): first request, first write, last write, exit.
sim_timeline() {
  curl -s "$SIM_URL/_sim/requests" | python3 -c '
import json, sys
from datetime import datetime
t0, t1 = float(sys.argv[1]), float(sys.argv[2])
at = lambda r: datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp()
log = json.load(sys.stdin)
writes = [at(r) for r in log if r["method"] != "GET" and "/scim/v2/" in r["path"]]
ms = lambda t: "%d ms" % round((t - t0) * 1000)
print("first request +%s, first write +%s, last write +%s, exit +%s" % (
    ms(min(at(r) for r in log)), ms(min(writes)), ms(max(writes)), ms(t1)))' "$1" "$2"
}

clear_sim_log() {
  curl -s -X DELETE "$SIM_URL/_sim/requests" > /dev/null
}

# ---------------------------------------------------------------------------------------------
# Part 1: no-op reconcile from slapd.
# ---------------------------------------------------------------------------------------------
noop_part() {
  echo "== no-op: generating and loading $USERS users and $NGROUPS groups" >&2
  bench_directory_ldif "$USERS" "$NGROUPS" > "$WORK/data.ldif"
  bench_start_slapd "$WORK/data.ldif"
  rm -f "$WORK/data.ldif"
  # No simulated rate limit here, and the client told the limits are far away: this part
  # measures reading and planning, not pacing.
  start_sim
  {
    ironclad_toml 100000000 100000000 noop 60
    bench_source_toml '["uid", "cn", "sn", "givenName", "mail", "title", "employeeNumber", "pwdAccountLockedTime"]'
  } > "$WORK/noop.toml"
  # Users: the mapping's attributes plus entryUUID and memberOf (the source adds those);
  # groups: everything and member.
  LS="ldapsearch -x -LLL -H $SLAPD_URL -D uid=reader,ou=system,dc=example,dc=test -y $WORK/reader.pw -E pr=$PAGE/noprompt"
  LS_CMD="$LS -b ou=people,dc=example,dc=test '(objectClass=inetOrgPerson)' uid cn sn givenName mail title employeeNumber pwdAccountLockedTime entryUUID memberOf > /dev/null && $LS -b ou=groups,dc=example,dc=test '(objectClass=groupOfNames)' '*' entryUUID member > /dev/null"

  echo "== no-op: converging the simulator (one apply, not timed)" >&2
  t0=$(date +%s.%N)
  "$IB" --log warn apply --config "$WORK/noop.toml" --yes > "$WORK/seed-apply.txt" 2>&1 || {
    tail -20 "$WORK/seed-apply.txt" >&2; exit 1; }
  t1=$(date +%s.%N)
  echo "   converged in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s" >&2

  IB_CMD="$IB --log warn apply --config $WORK/noop.toml --yes"
  clear_sim_log
  out=$($IB_CMD 2>&1) || { echo "$out" >&2; echo "bench: the no-op run did not exit 0" >&2; exit 1; }
  sim_log > "$WORK/noop-requests.txt"
  N=$(curl -s -H "Authorization: Bearer $TOKEN" "$SIM_URL/scim/v2/Users?count=1" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["totalResults"])')
  LIST_CALLS=$(grep -c '^GET /scim/v2/Users?' "$WORK/noop-requests.txt" || true)
  FILTER_CALLS=$(grep -c '^GET /scim/v2/Users?.*filter=' "$WORK/noop-requests.txt" || true)
  WRITES=$(grep -v '^GET ' "$WORK/noop-requests.txt" | grep -c ' /scim/v2/' || true)
  EXPECTED_CALLS=$(( (N + 999) / 1000 ))
  echo "   simulator users: $N; user list calls: $LIST_CALLS (expected $EXPECTED_CALLS, of which filtered: $FILTER_CALLS); writes: $WRITES" >&2
  CURL_CMD="curl -s -H 'Authorization: Bearer $TOKEN' '$SIM_URL/scim/v2/Users?count=1000&startIndex=[1-$N:1000]' > /dev/null"

  echo "== no-op: timing ($RUNS runs each, 1 warm-up)" >&2
  hyperfine --style basic --warmup 1 --runs "$RUNS" --export-json "$WORK/noop.json" \
    -n ironbridge "$IB_CMD" -n ldapsearch "$LS_CMD" -n curl "$CURL_CMD" >&2
  IB_MED=$(bench_median "$WORK/noop.json" ironbridge)
  LS_MED=$(bench_median "$WORK/noop.json" ldapsearch)
  CURL_MED=$(bench_median "$WORK/noop.json" curl)
  BOUND=$(awk -v a="$LS_MED" -v b="$CURL_MED" 'BEGIN { print (a > b) ? a : b }')
  IB_RSS=$(bench_peak_rss "$IB_CMD")
  # Diagnostics: RSS_PREFIXES="env MALLOC_ARENA_MAX=1|..." measures peak RSS under each prefix.
  if [ -n "${RSS_PREFIXES:-}" ]; then
    IFS='|' read -ra prefixes <<< "$RSS_PREFIXES"
    for p in "${prefixes[@]}"; do
      echo "   peak RSS with '$p': $(( $(bench_peak_rss "$p $IB_CMD" 1) / 1024 )) MiB" >&2
    done
  fi
  NOOP_REPORT=$(cat <<EOF
No-op reconcile: $USERS directory users + $NGROUPS groups (slapd) -> $N simulator users, $(nproc) cores, load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)
  ironbridge apply (nothing to do)   median $(printf '%.3f' "$IB_MED") s, peak RSS $((IB_RSS / 1024)) MiB (goal <= 300 MB)
  ldapsearch (same entries)          median $(printf '%.3f' "$LS_MED") s
  curl paged GET of all users        median $(printf '%.3f' "$CURL_MED") s
  ratio to the larger: $(bench_ratio "$IB_MED" "$BOUND")x (goal <= 1.2x)
  user list calls: $LIST_CALLS (ceil(N/1000) = $EXPECTED_CALLS; filtered lookups among them: $FILTER_CALLS); non-GET requests: $WRITES
EOF
)
  stop_sim
  bench_stop_slapd
}

# ---------------------------------------------------------------------------------------------
# Part 2: 1,000 updates and 100 removals under the limits x60.
# ---------------------------------------------------------------------------------------------
# Writes $3/requests.cfg (bench/last-window.py): $1 PUT and $2 PATCH requests to distinct users
# of the simulator at $SIM_URL, and checks once that curl has every one answered 200.
blast_requests() {
  mkdir -p "$3"
  curl -sf -H "Authorization: Bearer $TOKEN" "$SIM_URL/scim/v2/Users?count=1000" > "$3/page1.json"
  curl -sf -H "Authorization: Bearer $TOKEN" "$SIM_URL/scim/v2/Users?count=1000&startIndex=1001" > "$3/page2.json"
  python3 "$ROOT/bench/last-window.py" "$SIM_URL" "$TOKEN" "$1" "$2" "$3"
  local codes
  codes=$(curl -s -Z --parallel-max 50 -K "$3/requests.cfg" | sort | uniq -c | awk '{ printf "%s x %s; ", $2, $1 }')
  if [ "$codes" != "200 x $(( $1 + $2 )); " ]; then
    echo "bench: the last-window requests were answered: $codes" >&2
    exit 1
  fi
}

writes_part() {
  local n=1100
  echo "== writes: preparing $n users, then 1000 movers and 100 leavers" >&2
  # LDIF sources: before (1100 users), after (titles of the first 1000 changed, the last 100
  # gone). No account is locked (lock every 0th = never).
  bench_directory_ldif "$n" 11 0 0 0 > "$WORK/before.ldif"
  bench_directory_ldif "$n" 11 1000 1000 0 > "$WORK/after.ldif"
  start_sim --rate-limit-scale 60
  for v in before balanced patch; do
    {
      ironclad_toml 600 50 "$v" 1
      printf '\n[source]\nkind = "ldif"\npath = "%s"\n' "$WORK/$([ "$v" = before ] && echo before || echo after).ldif"
    } > "$WORK/$v.toml"
  done
  # write_method belongs in [policy]: append it there for the patch variant.
  sed -i 's/^max_removal_percent = 50$/max_removal_percent = 50\nwrite_method = "patch"/' "$WORK/patch.toml"
  "$IB" --log warn apply --config "$WORK/before.toml" --yes > "$WORK/before-apply.txt" 2>&1 || {
    tail -20 "$WORK/before-apply.txt" >&2; exit 1; }
  curl -s "$SIM_URL/_sim/state" > "$WORK/seed.json"
  cp "$WORK/state-before.db" "$WORK/state-seed.db"
  stop_sim
  SIM_PORT=$(bench_free_port)

  # Before each timed run: a fresh simulator from the seed (new rate-limit windows) and the
  # store as it was after the first apply.
  cat > "$WORK/prepare.sh" <<EOF
#!/usr/bin/env bash
set -e
[ -f "$WORK/sim.pid" ] && { kill \$(cat "$WORK/sim.pid") 2>/dev/null || true; sleep 0.3; }
for f in balanced patch; do
  rm -f "$WORK/state-\$f.db" "$WORK/state-\$f.db-wal" "$WORK/state-\$f.db-shm" "$WORK/audit-\$f.jsonl"
  cp "$WORK/state-seed.db" "$WORK/state-\$f.db"
done
"$SIM" --listen "127.0.0.1:$SIM_PORT" --token "$TOKEN:$SCOPES" --rate-limit-scale 60 --seed "$WORK/seed.json" > "$WORK/sim-run.log" 2>&1 &
echo \$! > "$WORK/sim.pid"
for _ in \$(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$SIM_PORT") 2>/dev/null && exit 0; sleep 0.05; done
exit 1
EOF
  chmod +x "$WORK/prepare.sh"
  SIM_URL="http://127.0.0.1:$SIM_PORT"
  for v in balanced patch; do
    sed -i "s#^base_url = .*#base_url = \"$SIM_URL\"#" "$WORK/$v.toml"
  done

  # One checked run of each: exact counts and zero 429.
  for v in balanced patch; do
    "$WORK/prepare.sh"
    t0=$(date +%s.%N)
    "$IB" --log warn apply --config "$WORK/$v.toml" --yes > "$WORK/$v-apply.txt" 2>&1 || {
      tail -20 "$WORK/$v-apply.txt" >&2; echo "bench: $v apply did not exit 0" >&2; exit 1; }
    t1=$(date +%s.%N)
    SIM_URL="http://127.0.0.1:$SIM_PORT" sim_log > "$WORK/$v-requests.txt"
    eval "${v}_TIMELINE=\"$(SIM_URL="http://127.0.0.1:$SIM_PORT" sim_timeline "$t0" "$t1")\""
    eval "${v}_PUT=$(grep -c '^PUT /scim/v2/Users/' "$WORK/$v-requests.txt" || true)"
    eval "${v}_PATCH=$(grep -c '^PATCH /scim/v2/Users/' "$WORK/$v-requests.txt" || true)"
    eval "${v}_429=$(grep -c ' 429$' "$WORK/$v-requests.txt" || true)"
    eval "${v}_READS=$(grep -c '^GET /scim/v2/Users' "$WORK/$v-requests.txt" || true)"
    echo "   $v: $(eval echo "\$${v}_PUT") PUT, $(eval echo "\$${v}_PATCH") PATCH, $(eval echo "\$${v}_429") answers 429" >&2
  done
  kill "$(cat "$WORK/sim.pid")" 2>/dev/null || true

  echo "== writes: timing ($WRITE_RUNS runs each)" >&2
  hyperfine --style basic --runs "$WRITE_RUNS" --prepare "$WORK/prepare.sh" --export-json "$WORK/writes.json" \
    -n balanced "$IB --log warn apply --config $WORK/balanced.toml --yes" \
    -n patch "$IB --log warn apply --config $WORK/patch.toml --yes" >&2
  kill "$(cat "$WORK/sim.pid")" 2>/dev/null || true
  B_MED=$(bench_median "$WORK/writes.json" balanced)
  P_MED=$(bench_median "$WORK/writes.json" patch)
  # The bound. The simulator counts each bucket in fixed one-second windows whose start the
  # client cannot see, so k requests through a bucket of L a window cannot all be sent sooner
  # than (ceil(k/L) - 1) windows after the first one, and the requests left to the last window
  # (k - L * (ceil(k/L) - 1), for each bucket that needs the most windows) must then still be
  # answered. The list calls share the PUT/POST bucket. So: bound = those whole windows + the
  # time curl takes to have those last requests answered, all sent at once to a simulator
  # without limits started from the same seed. (At steady full rate instead, (requests)/650
  # per second: a bound only for clients that must spread their requests evenly.)
  windows() { awk -v k="$1" -v l="$2" 'BEGIN { print (k <= 0) ? 0 : int((k + l - 1) / l) - 1 }'; }
  last_window() { awk -v k="$1" -v l="$2" 'BEGIN { if (k <= 0) print 0; else print k - l * int((k - 1) / l) }'; }
  start_sim --seed "$WORK/seed.json"
  local v rw pd wrw wpd w n_put n_patch
  for v in balanced patch; do
    rw=$(( $(eval echo "\$${v}_PUT") + $(eval echo "\$${v}_READS") ))
    pd=$(eval echo "\$${v}_PATCH")
    wrw=$(windows "$rw" 600)
    wpd=$(windows "$pd" 50)
    w=$(( wrw > wpd ? wrw : wpd ))
    n_put=0
    n_patch=0
    [ "$wrw" = "$w" ] && n_put=$(last_window "$rw" 600)
    [ "$wpd" = "$w" ] && n_patch=$(last_window "$pd" 50)
    blast_requests "$n_put" "$n_patch" "$WORK/blast-$v"
    echo "== writes: curl having $v's last window ($n_put PUT, $n_patch PATCH) answered, no limits" >&2
    hyperfine -N --style basic --warmup 2 --runs 15 --export-json "$WORK/blast-$v.json" \
      -n blast "curl -s -Z --parallel-max 50 -K $WORK/blast-$v/requests.cfg" >&2
    eval "${v}_WINDOWS=$w ${v}_LAST_PUT=$n_put ${v}_LAST_PATCH=$n_patch"
    eval "${v}_BLAST=$(bench_median "$WORK/blast-$v.json" blast)"
  done
  stop_sim
  B_BOUND=$(awk -v w="$balanced_WINDOWS" -v t="$balanced_BLAST" 'BEGIN { printf "%.3f", w + t }')
  P_BOUND=$(awk -v w="$patch_WINDOWS" -v t="$patch_BLAST" 'BEGIN { printf "%.3f", w + t }')
  B_STEADY=$(awk -v r="$balanced_READS" 'BEGIN { printf "%.3f", (1100 + r) / 650 }')
  WRITES_REPORT=$(cat <<EOF
Writes: 1000 updates + 100 deactivations, simulator limits x60 (600 PUT/POST/GET and 50 PATCH/DELETE per second)
  balanced PUT/PATCH ($balanced_PUT PUT, $balanced_PATCH PATCH)   median $(printf '%.3f' "$B_MED") s, bound $B_BOUND s = $balanced_WINDOWS s of windows + $(printf '%.3f' "$balanced_BLAST") s for curl to have the last window's $balanced_LAST_PUT PUT + $balanced_LAST_PATCH PATCH answered; ratio $(bench_ratio "$B_MED" "$B_BOUND")x (goal <= 1.1x); to the windows alone $(bench_ratio "$B_MED" "$balanced_WINDOWS")x; steady-rate bound $B_STEADY s; 429 answers: $balanced_429
  PATCH only ($patch_PUT PUT, $patch_PATCH PATCH)            median $(printf '%.3f' "$P_MED") s, bound $P_BOUND s = $patch_WINDOWS s of windows + $(printf '%.3f' "$patch_BLAST") s for the last window's $patch_LAST_PATCH PATCH; ratio $(bench_ratio "$P_MED" "$P_BOUND")x; 429 answers: $patch_429
  PATCH only / balanced: $(bench_ratio "$P_MED" "$B_MED")x slower (expected >= 8x)
  checked balanced run: $balanced_TIMELINE
  checked PATCH-only run: $patch_TIMELINE
EOF
)
}

NOOP_REPORT=""
WRITES_REPORT=""
case "$PART" in
  all) noop_part; writes_part ;;
  noop) noop_part ;;
  writes) writes_part ;;
  *) echo "bench: PART is all, noop or writes" >&2; exit 2 ;;
esac
echo
[ -n "$NOOP_REPORT" ] && echo "$NOOP_REPORT"
[ -n "$WRITES_REPORT" ] && echo "$WRITES_REPORT"
exit 0
