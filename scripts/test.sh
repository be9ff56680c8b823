#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with the Rust toolchain:
#   1. installs what the tests need and the machine lacks (Debian: slapd, ldap-utils, samba,
#      chromium for the HTML report check;
#      PyPI: scim2-server, scim2-tester in target/test-venv),
#   2. checks formatting and lints,
#   3. runs every test (unit and the one integration binary).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v slapd >/dev/null 2>&1 || [ -x /usr/sbin/slapd ] || need_apt+=(slapd)
command -v ldapsearch >/dev/null 2>&1 || need_apt+=(ldap-utils)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v samba >/dev/null 2>&1 || [ -x /usr/sbin/samba ] || need_apt+=(samba samba-ad-dc samba-ad-provision samba-dsdb-modules)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} from Debian" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "slapd slapd/no_configuration boolean true" | $SUDO debconf-set-selections
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

VENV="${IRONBRIDGE_TEST_VENV:-$PWD/target/test-venv}"
if [ ! -x "$VENV/bin/scim2-server" ] || ! "$VENV/bin/python" -c 'import scim2_tester' 2>/dev/null; then
  echo "preparing the Python test peers in $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q -r tests/python-requirements.txt
fi
export IRONBRIDGE_TEST_VENV="$VENV"

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked --all-targets
