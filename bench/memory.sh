#!/bin/bash
# Bytes per held phone subscription, from a heap profiler (dhat) over the sans-IO
# core: examples/memory.rs builds an Endpoint, establishes TARGETS targets upstream
# and PHONES phone subscriptions (GXP/UDP, Yealink/UDP, Wave/TCP, snom/UDP; 10 keys
# per device), answers everything, runs the simulated clock 40 s past the last
# message (no transaction left) and reports the live heap per subscription and
# by allocation site. Deterministic: no sockets, no real time, no machine noise.
# A second run without the profiler reports glibc's malloc chunk bytes and the
# process's VmRSS for the same workload.
#
#   bench/memory.sh                       50,000 phones over 5,000 targets
#   PHONES=10000 TARGETS=1000 bench/memory.sh
#
# Knobs: PHONES (50000), TARGETS (5000), TOP (25 allocation sites), PROFILE
# (memprof: release with line tables, Cargo.toml; `dev` reuses the test build —
# same bytes, slower), OUT (directory for dhat-heap.json, default a new mktemp -d;
# open it in dhat's viewer, dh_view.html, for the whole tree).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PHONES=${PHONES:-50000}
TARGETS=${TARGETS:-5000}
TOP=${TOP:-25}
PROFILE=${PROFILE:-memprof}
OUT=${OUT:-$(mktemp -d /tmp/blf-memory.XXXXXX)}
mkdir -p "$OUT"
cd "$REPO"
nice -n 10 cargo build --quiet --profile "$PROFILE" --example memory
dir=$PROFILE; [ "$PROFILE" = dev ] && dir=debug
BIN="$REPO/target/$dir/examples/memory"
echo "results in $OUT" >&2
"$BIN" --phones "$PHONES" --targets "$TARGETS" --top "$TOP" --json "$OUT/dhat-heap.json" \
  2> >(grep -v '^dhat:' >&2)
echo
"$BIN" --rss --phones "$PHONES" --targets "$TARGETS" | sed -n '/^| glibc/,$p'
