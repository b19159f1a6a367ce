#!/bin/bash
# The scale run (issue 12): PHONES phone subscriptions over TARGETS targets (2 upstream
# subscriptions each), established from cold and held HOLD s with refreshes on both sides.
#
#   SIPp phones (bench/scen/sub-refresh.xml: Grandstream Wave, Expires EXP_MIN..EXP_MAX s,
#   refreshed at REFRESH_PCT % of it) -> blf-bridge (release build, RUST_LOG=warn,
#   `upstream_rate` the product default unless UPSTREAM_RATE=, `upstream_expires`
#   UPSTREAM_EXPIRES) -> Kamailio with the harness config (tests/harness/kamailio.cfg,
#   SUB_AUTH=1: it challenges the bridge's SUBSCRIBEs with 407), on loopback.
#
# Timeline: the bridge starts (nothing established, no state store); memory "before";
# PHONES phones at PHONE_RATE/s (phone i watches target 3000 + i mod TARGETS, so the
# first TARGETS phones make every target); wait until /metrics shows every upstream
# subscription active and every phone had its first NOTIFY (at most ESTABLISH_MAX s):
# memory "established"; hold HOLD s (phones and the bridge refresh; nothing else
# happens): memory "end". Sampled every SAMPLE_S s: the bridge's utime+stime, VmRSS,
# RssAnon, PSS (/proc), the upstream Kamailio's CPU, UDP drops at the three sockets,
# /metrics (every sample during the establishment, every HOLD_METRICS_S s in the hold).
# dumpcap on lo at the bridge's port (both sides; snapshot CAP_SNAPLEN bytes): packets per
# kind per second in the hold. Report: RUN/report.md (markdown).
#
#   bench/scale.sh                                   build, then the full run (~25 min)
#   PHONES=2000 TARGETS=200 HOLD=60 bench/scale.sh   a validation run (~2 min)
#   BUILD=0 bench/scale.sh                           without cargo build
#
# Knobs (environment): PHONES (50000) TARGETS (5000) PHONE_RATE (200) HOLD (600)
#   EXP_MIN (120) EXP_MAX (300) REFRESH_PCT (50)  SEED (12: the phones' Expires)
#   UPSTREAM_RATE ("": product default, 20/s)  UPSTREAM_EXPIRES (600: the bridge's
#   upstream Expires; refreshed at 70-85 %, so every upstream subscription refreshes
#   within a 10 min hold)  FIRST_NOTIFY_MS ("": product default, 2000)
#   UP_SHM (512 MB: the upstream Kamailio's shared memory)  SUB_AUTH (1)
#   ESTABLISH_MAX (auto: 3 x the larger of PHONES/PHONE_RATE and 2*TARGETS/20, + 120 s)
#   SAMPLE_S (2) HOLD_METRICS_S (30) CAPTURE (1; 0: no dumpcap) CAP_SNAPLEN (600)
#   KEEP_PCAP (0: the capture is deleted once counted) BUILD (1)
#   MALLOC_STATS (1: glibc malloc_stats() through gdb before the phones, when all are
#   established and at the end of the hold: live heap vs what malloc holds; 0: not)
#   HEAPTRACK (0; 1: the bridge runs under heaptrack, killed with SIGKILL at the end of
#   the hold, so heaptrack's "leaked" list is the live heap then, by allocation site:
#   RUN/heaptrack.txt. Slow; the memory and CPU figures of such a run include heaptrack)
#   PERF (0; 1: `perf record -e cpu-clock -g` on the bridge for the first PERF_S (60) s of
#   the hold -> RUN/perf.data, flat profile in RUN/perf.txt)
#   BENCH_DIR (default: a new mktemp -d; results stay there) BIN (the bridge binary)
#   RUST_LOG (warn)
# Needs sipp, kamailio (+ presence, SQLite modules), kamcmd, sqlite3, dumpcap (package
# tshark) and root for the capture on lo, gdb for MALLOC_STATS. Every process it starts runs in its own
# process group and is killed at the end (trap); every wait is bounded.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
PHONES=${PHONES:-50000}
TARGETS=${TARGETS:-5000}
PHONE_RATE=${PHONE_RATE:-200}
HOLD=${HOLD:-600}
EXP_MIN=${EXP_MIN:-120}
EXP_MAX=${EXP_MAX:-300}
REFRESH_PCT=${REFRESH_PCT:-50}
SEED=${SEED:-12}
UPSTREAM_RATE=${UPSTREAM_RATE:-}
UPSTREAM_EXPIRES=${UPSTREAM_EXPIRES:-600}
FIRST_NOTIFY_MS=${FIRST_NOTIFY_MS:-}
UP_SHM=${UP_SHM:-512}
SUB_AUTH=${SUB_AUTH:-1}
SAMPLE_S=${SAMPLE_S:-2}
HOLD_METRICS_S=${HOLD_METRICS_S:-30}
CAPTURE=${CAPTURE:-1}
CAP_SNAPLEN=${CAP_SNAPLEN:-600}
KEEP_PCAP=${KEEP_PCAP:-0}
PERF=${PERF:-0}
MALLOC_STATS=${MALLOC_STATS:-1}
HEAPTRACK=${HEAPTRACK:-0}
if [[ "$HEAPTRACK" == 1 ]]; then MALLOC_STATS=0; fi
PERF_S=${PERF_S:-60}
BUILD=${BUILD:-1}
export RUST_LOG=${RUST_LOG:-warn}
BIN=${BIN:-$REPO/target/release/blf-bridge}
rate=${UPSTREAM_RATE:-20}
a=$(( PHONES / PHONE_RATE )); b=$(( 2 * TARGETS / rate ))
ESTABLISH_MAX=${ESTABLISH_MAX:-$(( 3 * (a > b ? a : b) + 120 ))}
LIFETIME=$(( ESTABLISH_MAX + HOLD + 600 ))   # no process started here outlives this
PY="python3 $HERE/scale.py"

BENCH_DIR=${BENCH_DIR:-$(mktemp -d /tmp/blf-scale.XXXXXX)}
mkdir -p "$BENCH_DIR"
RUN="$(cd "$BENCH_DIR" && pwd)"
echo "results in $RUN" >&2

# process groups (start_group, stop_group, cleanup on EXIT), start_bridge
. "$HERE/lib.sh"
# the bridge's [subscriptions] for lib.sh's start_bridge
BRIDGE_UPSTREAM_EXPIRES=$UPSTREAM_EXPIRES
(( EXP_MIN < 60 )) && BRIDGE_MIN_EXPIRES=$EXP_MIN

need sipp sip-tester; need kamailio "kamailio kamailio-presence-modules kamailio-sqlite-modules"
need kamcmd kamailio; need sqlite3 sqlite3; need setsid util-linux; need timeout coreutils
[[ "$MALLOC_STATS" == 1 ]] && need gdb gdb
if [[ "$CAPTURE" == 1 ]]; then
  need dumpcap tshark
  [[ $(id -u) == 0 ]] || { echo "the capture on lo needs root (or CAPTURE=0)" >&2; exit 1; }
fi

if [[ "$BUILD" == 1 ]]; then
  (cd "$REPO" && nice -n 10 cargo build --release --bin blf-bridge) || exit 1
fi
[[ -x "$BIN" ]] || { echo "no $BIN (BUILD=1)" >&2; exit 1; }

{
  echo "$(for v in PHONES TARGETS PHONE_RATE HOLD EXP_MIN EXP_MAX REFRESH_PCT UPSTREAM_RATE UPSTREAM_EXPIRES FIRST_NOTIFY_MS SUB_AUTH; do
      printf '%s=%s ' "$v" "${!v}"; done)bench/scale.sh"
} >"$RUN/command.txt"
{
  echo "date: $(date -Is)"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "kernel: $(uname -r)"
  echo "kamailio: $(kamailio -v 2>/dev/null | head -1)"
  echo "sipp: $(sipp -v 2>/dev/null | grep -m1 -i 'sipp v' | tr -d '\r' | sed 's/^ *//')"
  echo "bridge: $("$BIN" --version 2>/dev/null) $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)$(git -C "$REPO" diff --quiet HEAD 2>/dev/null || echo '+dirty')"
  echo "uptime at start: $(uptime | sed 's/^ *//')"
} | tee "$RUN/machine.txt" >&2

event() { echo "$1 $(date +%s.%N)" >>"$RUN/events"; }

# malloc_stats LABEL: glibc's malloc_stats() in the bridge (gdb attaches for about a
# second): per arena, bytes taken from the system and bytes in use (live chunks). It
# prints on the bridge's stderr: the new part of bridge.log -> RUN/malloc-LABEL.txt
malloc_stats() {
  [[ "$MALLOC_STATS" == 1 ]] || return 0
  local log="$RUN/bridge/bridge.log" size
  size=$(stat -c %s "$log")
  timeout 60 gdb -p "$BPID" -batch -nx -ex 'call (void) malloc_stats()' >"$RUN/gdb-$1.log" 2>&1
  sleep 0.5
  tail -c +$(( size + 1 )) "$log" | grep -E '^(Arena|system bytes|in use bytes|Total|max mmap)' >"$RUN/malloc-$1.txt"
}

# ----------------------------------------------------------------- start
$PY phones_csv "$RUN/phones.csv" "$PHONES" "$TARGETS" "$EXP_MIN" "$EXP_MAX" "$REFRESH_PCT" "$SEED" || exit 1
[[ "$HEAPTRACK" == 1 ]] && { need heaptrack heaptrack; WRAP="heaptrack -o $RUN/heaptrack"; }
start_bridge "$RUN" || exit 1
BPID=$(python3 "$HERE/scale.py" pid_of "$SGROUP" blf-bridge) || { echo "no bridge process" >&2; exit 1; }
cat >"$RUN/meta.json" <<EOF
{"phones": $PHONES, "targets": $TARGETS, "phone_rate": $PHONE_RATE, "hold_s": $HOLD,
 "exp_min": $EXP_MIN, "exp_max": $EXP_MAX, "refresh_pct": $REFRESH_PCT,
 "upstream_rate": ${UPSTREAM_RATE:-null}, "upstream_expires": $UPSTREAM_EXPIRES,
 "first_notify_ms": ${FIRST_NOTIFY_MS:-null}, "sample_s": $SAMPLE_S,
 "sport": $SPORT, "uport": $UPORT, "hport": $HPORT, "bridge_pid": $BPID}
EOF
if [[ "$CAPTURE" == 1 ]]; then
  start_group "$RUN/dumpcap.log" dumpcap -q -i lo -f "udp port $SPORT" -s "$CAP_SNAPLEN" -B 256 -P -w "$RUN/cap.pcap"
  DGROUP=$BG
fi
CWD="$RUN" start_group "$RUN/sampler.log" python3 "$HERE/scale.py" sample "$RUN" "$SGROUP" "$UGROUP" \
    "127.0.0.1:$HPORT" "$SPORT" "$UPORT" "$SAMPLE_S" "$HOLD_METRICS_S"
SAMPLER=$BG
sleep 3
up_shm() { python3 "$HERE/compare.py" shm "unix:$RUN/up/ctl"; }
shm0=$(up_shm)
$PY proc "$SGROUP" >"$RUN/proc-before.json"
malloc_stats before

# ----------------------------------------------------------------- phones, from cold
mkdir -p "$RUN/phones"
port=$(python3 "$HERE/bench.py" freeport)
echo "$port" >"$RUN/phones/port"
event phones_start
CWD="$RUN/phones" start_group "$RUN/phones/sipp.out" sipp "127.0.0.1:$SPORT" -sf "$HERE/scen/sub-refresh.xml" \
    -inf "$RUN/phones.csv" -i 127.0.0.1 -p "$port" -t u1 -r "$PHONE_RATE" -m "$PHONES" -l $(( PHONES + 100 )) \
    -nostdin -default_behaviors none -buff_size 8388608 -recv_timeout 10000 \
    -timeout "${LIFETIME}s" -timeout_error \
    -trace_stat -stf "$RUN/phones/stat.csv" -fd 5 -trace_rtt -rtt_freq 1 \
    -trace_err -error_file "$RUN/phones/err.log" -trace_screen -screen_file "$RUN/phones/screen.log"
PGROUP=$BG
deadline=$(( $(date +%s) + ESTABLISH_MAX ))
ok=0
while (( $(date +%s) < deadline )); do
  if $PY ready "$RUN" "$PHONES" "$TARGETS"; then ok=1; break; fi
  kill -0 "$PGROUP" 2>/dev/null || { echo "SIPp ended during the establishment (see $RUN/phones)" >&2; break; }
  kill -0 "$SGROUP" 2>/dev/null || { echo "the bridge ended (see $RUN/bridge/bridge.log)" >&2; break; }
  sleep 2
done
event established
$PY proc "$SGROUP" >"$RUN/proc-established.json"
malloc_stats established
n=$($PY count_rtd "$RUN/phones" 2)
if (( ok )); then
  echo "established: $n/$PHONES phones had their first NOTIFY, every upstream subscription active" >&2
else
  echo "NOT established within $ESTABLISH_MAX s: $n/$PHONES phones had their first NOTIFY; $($PY metrics "127.0.0.1:$HPORT")" >&2
fi

# ----------------------------------------------------------------- the hold
touch "$RUN/hold"
if [[ "$PERF" == 1 ]]; then   # where the bridge's CPU goes in the hold (no hardware counter needed)
  start_group "$RUN/perf.log" perf record -e cpu-clock -F 499 -g -p "$BPID" -o "$RUN/perf.data" -- sleep "$PERF_S"
  PERFGROUP=$BG
fi
end=$(( $(date +%s) + HOLD ))
while (( $(date +%s) < end )); do
  kill -0 "$PGROUP" 2>/dev/null || { echo "SIPp ended during the hold" >&2; break; }
  kill -0 "$SGROUP" 2>/dev/null || { echo "the bridge ended during the hold" >&2; break; }
  sleep $(( end - $(date +%s) < 5 ? 1 : 5 ))
done
event hold_end
$PY proc "$SGROUP" >"$RUN/proc-end.json"
shm1=$(up_shm)
echo "{\"before\": $shm0, \"end\": $shm1}" >"$RUN/up-shm.json"
$PY metrics "127.0.0.1:$HPORT" >"$RUN/metrics-end.json"
sleep 6                                  # SIPp's last statistics line (-fd 5)
# the phones stop before gdb stops the bridge for malloc_stats (a second without
# answers would make SIPp retransmit and overflow the sockets after the hold)
stop_group "$PGROUP"
[[ -n "${DGROUP:-}" ]] && stop_group "$DGROUP"
malloc_stats end
if [[ "$HEAPTRACK" == 1 ]]; then
  # the live heap now, by allocation site: no shutdown, so nothing is freed first
  kill -KILL "$BPID"
  for i in $(seq 1200); do kill -0 -- "-$SGROUP" 2>/dev/null || break; sleep 0.1; done
  heaptrack_print -f "$RUN"/heaptrack.*zst --print-peaks=1 --print-allocators=0 --print-temporary=0 --print-leaks=1 --peak-limit=40 --sub-peak-limit=12 >"$RUN/heaptrack.txt" 2>&1
fi
touch "$RUN/samples.stop"; sleep "$SAMPLE_S"; stop_group "$SAMPLER"
if [[ -n "${PERFGROUP:-}" ]]; then
  wait "$PERFGROUP" 2>/dev/null; forget_group "$PERFGROUP"
  perf report -i "$RUN/perf.data" --stdio --no-children --sort symbol 2>/dev/null | grep -v '^$' | head -80 >"$RUN/perf.txt"
fi
cleanup
echo "load average at the end: $(cat /proc/loadavg)" >>"$RUN/machine.txt"

# ----------------------------------------------------------------- report
if [[ -s "$RUN/cap.pcap" ]]; then
  if $PY pcap "$RUN" >"$RUN/pcap.json"; then [[ "$KEEP_PCAP" == 1 ]] || rm -f "$RUN/cap.pcap"; fi
fi
$PY report "$RUN" | tee "$RUN/report.md"
