#!/usr/bin/env bash
# IdP event -> change applied in the simulator: 10 signed webhook events a second for 60 s
# (each changes one person's title in the sample LDIF directory), default 2 s debounce window.
# Prints p50/p99 of the time from the request to the change being visible in ironclad-sim.
# Bounded: stops 30 s after the last event at the latest.
# Usage: bench/serve-latency.sh [events_per_sec] [secs] [debounce_ms] [unpaced]
# (`unpaced`: client rate limits far above Ironclad's, to isolate ironbridge's own latency)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release --locked --example serve-bench -- latency "${1:-10}" "${2:-60}" "${3:-2000}" ${4:-}
