#!/usr/bin/env bash
# The kernel's floor for a fan-out on this machine, without the bridge: 1,000 datagrams
# of 900 bytes sent with sendmmsg (batches of 32) to one loopback socket whose reader
# answers each (as a SIPp phone answers 200), from one thread and from two sharing the
# socket; with dumpcap tapping lo (as bench/compare.sh's fan-out phase) and without.
# Prints the wall time of each of 7 rounds in microseconds. Needs cc and dumpcap.
# Used for decision 28 (docs/decisions.md).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT"' EXIT
cc -O2 -o "$OUT/sx" "$HERE/sendfloor/sx.c" -lpthread
cc -O2 -o "$OUT/rx" "$HERE/sendfloor/rx.c"
PORT=${PORT:-39999}
"$OUT/rx" "$PORT" &
dumpcap -q -i lo -f "udp port $PORT" -B 64 -w "$OUT/cap.pcapng" 2>/dev/null &
DC=$!
sleep 2
for t in 1 2; do echo "tap on,  $t thread(s): $("$OUT/sx" "$t" 1000 32 "$PORT") us"; done
kill "$DC"; sleep 1
for t in 1 2; do echo "tap off, $t thread(s): $("$OUT/sx" "$t" 1000 32 "$PORT") us"; done
