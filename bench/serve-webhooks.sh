#!/usr/bin/env bash
# 1,000 signed webhook requests a second for 10 s on loopback against `ironbridge serve`
# (bounded: exactly rate x seconds requests, then it stops). Prints response-time p50/p99,
# the status counts (no request may be lost) and how many runs the requests coalesced into.
# Usage: bench/serve-webhooks.sh [requests_per_sec] [secs]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release --locked --example serve-bench -- webhooks "${1:-1000}" "${2:-10}"
