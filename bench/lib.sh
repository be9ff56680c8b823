# Shared by the benchmark scripts (sourced, not run): a private slapd loaded offline with a
# generated directory, free ports, medians from hyperfine's JSON and peak RSS from GNU time.
#
# The caller sets ROOT (repository root) and WORK (a scratch directory it removes), and calls
# `bench_cleanup` from its EXIT trap.

PATH="$PATH:/usr/sbin"

# Exits with a message when a tool is missing.
bench_need() {
  for tool in "$@"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      echo "bench: $tool is missing (apt-get install slapd ldap-utils hyperfine openssl time curl)" >&2
      exit 2
    fi
  done
  [ -x /usr/bin/time ] || { echo "bench: GNU time is missing (apt-get install time)" >&2; exit 2; }
}

# A free TCP port on 127.0.0.1, below the kernel's range of ephemeral ports (so that no
# client connection of an earlier step holds it as its local port).
bench_free_port() {
  local p lo
  lo=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  [ "$lo" -gt 11000 ] 2>/dev/null || lo=32768
  for p in $(shuf -i 10000-$(( lo - 1 )) -n 50); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  echo "bench: no free port" >&2
  return 1
}

# Waits until something listens on 127.0.0.1:$1 (up to 10 s).
bench_wait_port() {
  local _
  for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "bench: nothing listens on port $1" >&2
  return 1
}

# The generated directory on stdout: $1 users (uid=userNNNNNN, mail userNNNNNN@example.test,
# every $5th (default 100; 0: none) locked with pwdAccountLockedTime) and $2 groupOfNames (cn=groupNNN), user i a
# member of group (i-1) mod $2, plus uid=reader,ou=system (password bench-reader).
# $3 (optional): users with i <= $3 get "Senior " before
# their title (the movers of a benchmark). $4 (optional): users with i > $4 are left out.
bench_directory_ldif() {
  awk -v users="$1" -v groups="$2" -v movers="${3:-0}" -v keep="${4:-0}" -v lock="${5:-100}" 'BEGIN {
    base = "dc=example,dc=test"
    if (keep == 0) keep = users
    print "dn: " base "\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n"
    print "dn: ou=people," base "\nobjectClass: organizationalUnit\nou: people\n"
    print "dn: ou=groups," base "\nobjectClass: organizationalUnit\nou: groups\n"
    print "dn: ou=system," base "\nobjectClass: organizationalUnit\nou: system\n"
    print "dn: uid=reader,ou=system," base "\nobjectClass: inetOrgPerson\nuid: reader\ncn: Reader\nsn: Reader\nuserPassword: bench-reader\n"
    for (i = 1; i <= keep; i++) {
      uid = sprintf("user%06d", i)
      g = (i - 1) % groups
      prefix = (movers > 0 && i <= movers) ? "Senior " : ""
      printf "dn: uid=%s,ou=people,%s\nobjectClass: inetOrgPerson\nuid: %s\ncn: User %d\nsn: %d\ngivenName: User\n", uid, base, uid, i, i
      printf "displayName: User %d\nmail: %s@example.test\nemployeeNumber: %d\ntitle: %sEngineer %d\ntelephoneNumber: +1 555 %07d\n", i, uid, i, prefix, i % 50, i
      if (lock > 0 && i % lock == 0) printf "pwdAccountLockedTime: 000001010000Z\n"
      printf "memberOf: cn=group%03d,ou=groups,%s\n\n", g, base
    }
    for (g = 0; g < groups; g++) {
      printf "dn: cn=group%03d,ou=groups,%s\nobjectClass: groupOfNames\ncn: group%03d\n", g, base, g
      n = 0
      for (i = g + 1; i <= keep; i += groups) { printf "member: uid=user%06d,ou=people,%s\n", i, base; n++ }
      if (n == 0) printf "member: uid=reader,ou=system,%s\n", base
      printf "\n"
    }
  }'
}

# Creates a slapd instance in $WORK/slapd (config, TLS pair, empty databases), loads the LDIF
# file $1 offline and starts slapd on a free port. Sets SLAPD_URL and SLAPD_DIR.
bench_start_slapd() {
  SLAPD_DIR="$WORK/slapd"
  mkdir -p "$SLAPD_DIR/slapd.d" "$SLAPD_DIR/db1" "$SLAPD_DIR/db2"
  (
    cd "$SLAPD_DIR"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt \
      -days 30 -subj "/CN=bench CA" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
      -subj "/CN=127.0.0.1" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\n' > ext.cnf
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt \
      -days 30 -extfile ext.cnf 2>/dev/null
  )
  sed "s#@DIR@#$SLAPD_DIR#g" "$ROOT/tests/fixtures/ldap/slapd-config.ldif" > "$SLAPD_DIR/config.ldif"
  slapadd -n0 -F "$SLAPD_DIR/slapd.d" -l "$SLAPD_DIR/config.ldif"
  local t0 t1 port
  t0=$(date +%s.%N)
  slapadd -n1 -q -F "$SLAPD_DIR/slapd.d" -l "$1"
  t1=$(date +%s.%N)
  echo "   loaded in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s ($(du -sh "$SLAPD_DIR/db1" | cut -f1) database)" >&2
  port=$(bench_free_port)
  SLAPD_URL="ldap://127.0.0.1:$port"
  slapd -F "$SLAPD_DIR/slapd.d" -h "$SLAPD_URL/"
  bench_wait_port "$port"
  (umask 077; printf 'bench-reader' > "$WORK/reader.pw")
}

# Stops what bench_start_slapd started.
bench_stop_slapd() {
  if [ -n "${SLAPD_DIR:-}" ] && [ -f "$SLAPD_DIR/slapd.pid" ]; then
    local pid
    pid=$(cat "$SLAPD_DIR/slapd.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
}

# The [source] section reading the generated directory (users with $1 as attributes).
bench_source_toml() {
  cat <<EOF
[source]
kind = "ldap"
url = "$SLAPD_URL"
bind_dn = "uid=reader,ou=system,dc=example,dc=test"
bind_password = { file = "$WORK/reader.pw" }
page_size = ${PAGE:-1000}

[source.users]
base_dn = "ou=people,dc=example,dc=test"
filter = "(objectClass=inetOrgPerson)"
attributes = $1

[source.groups]
base_dn = "ou=groups,dc=example,dc=test"
filter = "(objectClass=groupOfNames)"
EOF
}

# Median wall time (s) of the command named $2 in hyperfine's JSON file $1.
bench_median() {
  awk -v name="$2" '
    /"command":/ { gsub(/[",]/, "", $2); cur = $2 }
    /"median":/ { gsub(/,/, "", $2); if (cur == name) print $2 }
  ' "$1"
}

# Largest maximum resident set size (KiB) over $2 (default 3) runs of the shell command $1.
bench_peak_rss() {
  local max=0 kb _
  for _ in $(seq 1 "${2:-3}"); do
    kb=$( { /usr/bin/time -f '%M' sh -c "$1 > /dev/null" 2>&1 >/dev/null; } | tail -1)
    [ "$kb" -gt "$max" ] && max=$kb
  done
  echo "$max"
}

# a / b with two decimals.
bench_ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'
}
