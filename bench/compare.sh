#!/bin/bash
# The same BLF workload against Kamailio alone and against the bridge, in one run.
#
#   (kamailio) SIPp phones -> Kamailio 5.6 as the presence server for Event: dialog, in
#              its fastest configuration (bench/kamailio-presence.cfg: subscriptions in
#              memory, CHILDREN workers, no auth)
#   (bridge)   SIPp phones -> blf-bridge (release build) -> Kamailio with the project's
#              harness config (tests/harness/kamailio.cfg, SUB_AUTH=1) as the hosted PBX
#
# Same SIPp scenario for both (bench/scen/sub-wave.xml.in: Grandstream Wave phone,
# SUBSCRIBE -> hold HOLD s -> unsubscribe, over TARGETS targets), rising rates, the two
# servers alternating at each rate, fresh processes for every step. Loopback only, free
# ports, every process it starts is killed at the end (trap), every wait is bounded.
# A benchmark, not a test.
#
#   bench/compare.sh                       all phases (see PHASES)
#   PHASES="steady report" bench/compare.sh
#   bench/compare.sh steady cold report    phases as arguments work too
#
# Phases
#   build   cargo build --release --bin blf-bridge
#   steady  for each rate in RATES, for each server: fresh processes; pre-warm with one
#           long-held phone per target (for the bridge: until its upstream dialog and
#           presence subscriptions are active for every target, from /metrics); then
#           RATE*STEP_SECS phone lifecycles at `sipp -r RATE`, each holding HOLD s.
#           /proc CPU and PSS/RSS of the server sampled every 0.5 s; `perf stat -e
#           instructions` on the server's processes when the machine has the counter.
#   cold    the same without the pre-warm (nothing established upstream)
#   mem     MEM_COUNT phones at MEM_RATE, held: server memory before, when all are held
#           and SETTLE_S later (transactions gone), per held subscription
#   fanout  WATCHERS phones watch one target (1002); FAN_CYCLES rounds of two state
#           changes. Kamailio: a dialog PUBLISH (confirmed, then terminated) in; bridge: a
#           phone REGISTERs / un-REGISTERs 1002 at its upstream Kamailio (presence
#           NOTIFY in). dumpcap on lo: trigger in -> first and last phone NOTIFY out
#   instr   instructions per lifecycle under valgrind (callgrind) for machines without a
#           hardware instruction counter (VMs): INSTR_COUNT lifecycles at INSTR_RATE,
#           steady state, counters zeroed after the pre-warm and dumped after the load
#   report  markdown summary (one comparison table + details) -> BENCH_DIR/report.md
#
# Knobs (environment)
#   PHASES ("build steady cold mem fanout report"; `instr` is opt-in: it is slow)
#   QUICK (1: a validation run of <= 3 min: RATES=200 STEP_SECS=4 HOLD=2 TARGETS=50,
#          MEM_COUNT=1000 SETTLE_S=6 WATCHERS=200 FAN_CYCLES=1, no build; each overridable)
#   SERVERS ("kamailio bridge")     RATES ("500 1000 2000 3000 4000 5000 6000")
#   HOLD (5: seconds each phone holds)   TARGETS (500)   STEP_SECS (20: seconds of new
#   subscriptions per step)   STOP_AFTER (2: a server that missed the criterion at this
#   many consecutive rates is not offered higher ones; 0 = never skip)
#   P99_MS (50) FAIL_PCT (0.1): the "sustained" criterion (and achieved >= 95 % of offered)
#   COLD_P99_MS (FIRST_NOTIFY_MS or 2000, + 4: SIPp's clock tick): the cold phase's p99
#          bound instead of P99_MS (phones of a target not yet known upstream wait, by
#          design, first_notify_timeout_ms); a cold step also needs 0 UDP drops at the
#          server's and the upstream's socket
#   KAM_CHILDREN (4)  KAM_SHM (2048 MB)   UP_SHM (256 MB: the bridge's upstream Kamailio)
#   SUB_AUTH (1: the upstream Kamailio challenges the bridge's SUBSCRIBEs with 407)
#   UPSTREAM_RATE (""; the product default, 20/s)  FIRST_NOTIFY_MS ("": default, 2000)
#   MEM_COUNT (20000) MEM_RATE (1000) SETTLE_S (35)
#   WATCHERS (1000) WATCH_RATE (500) FAN_CYCLES (3)
#   INSTR_COUNT (1000) INSTR_RATE (50)
#   PERF (auto: perf stat when `perf stat -e instructions` counts; 0 = never)
#   BENCH_DIR (default: a new mktemp -d; results stay there)  BIN (the bridge binary)
#   RUST_LOG (warn: the bridge logs no line per subscription, as Kamailio at debug=1)
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
if (( $# )); then PHASES="$*"; else PHASES=${PHASES:-"build steady cold mem fanout report"}; fi
if [[ "${QUICK:-0}" == 1 ]]; then   # a validation run of <= 3 min (not a measurement)
  : "${RATES:=200}" "${STEP_SECS:=4}" "${HOLD:=2}" "${TARGETS:=50}" "${KAM_SHM:=256}" "${UP_SHM:=128}"
  : "${MEM_COUNT:=1000}" "${MEM_RATE:=500}" "${SETTLE_S:=6}" "${WATCHERS:=200}" "${FAN_CYCLES:=1}"
  : "${INSTR_COUNT:=100}" "${INSTR_RATE:=20}"
  [[ $# -eq 0 && "$PHASES" == "build steady cold mem fanout report" ]] && PHASES="steady cold mem fanout report"
fi
SERVERS=${SERVERS:-"kamailio bridge"}
RATES=${RATES:-"500 1000 2000 3000 4000 5000 6000"}
HOLD=${HOLD:-5}
TARGETS=${TARGETS:-500}
STEP_SECS=${STEP_SECS:-20}
STOP_AFTER=${STOP_AFTER:-2}
P99_MS=${P99_MS:-50}
# cold start: a phone whose target is not yet known upstream waits (by design) for
# first_notify_timeout_ms; the criterion is that wait plus one tick of SIPp's clock (its
# response times come in 4 ms steps here), and no datagram dropped at either socket
COLD_P99_MS=${COLD_P99_MS:-$(( ${FIRST_NOTIFY_MS:-2000} + 4 ))}
FAIL_PCT=${FAIL_PCT:-0.1}
KAM_CHILDREN=${KAM_CHILDREN:-4}
KAM_SHM=${KAM_SHM:-2048}
UP_SHM=${UP_SHM:-256}
SUB_AUTH=${SUB_AUTH:-1}
UPSTREAM_RATE=${UPSTREAM_RATE:-}
FIRST_NOTIFY_MS=${FIRST_NOTIFY_MS:-}
MEM_COUNT=${MEM_COUNT:-20000}
MEM_RATE=${MEM_RATE:-1000}
SETTLE_S=${SETTLE_S:-35}
WATCHERS=${WATCHERS:-1000}
WATCH_RATE=${WATCH_RATE:-500}
FAN_CYCLES=${FAN_CYCLES:-3}
INSTR_COUNT=${INSTR_COUNT:-1000}
INSTR_RATE=${INSTR_RATE:-50}
PERF=${PERF:-auto}
export RUST_LOG=${RUST_LOG:-warn}
BIN=${BIN:-$REPO/target/release/blf-bridge}
LIFETIME=3600            # no process started here outlives this (timeout -k)
PATH="$PATH:/usr/sbin:/sbin"
PY="python3 $HERE/compare.py"

BENCH_DIR=${BENCH_DIR:-$(mktemp -d /tmp/blf-compare.XXXXXX)}
mkdir -p "$BENCH_DIR"
BENCH_DIR="$(cd "$BENCH_DIR" && pwd)"
echo "results in $BENCH_DIR" >&2
# the command line and knobs, for the report
{
  echo "$(for v in PHASES SERVERS RATES HOLD TARGETS STEP_SECS COLD_P99_MS KAM_CHILDREN SUB_AUTH UPSTREAM_RATE FIRST_NOTIFY_MS MEM_COUNT MEM_RATE SETTLE_S WATCHERS FAN_CYCLES; do
      printf '%s="%s" ' "$v" "${!v}"; done)bench/compare.sh"
} >"$BENCH_DIR/command.txt"

# process groups (start_group, stop_group, cleanup on EXIT, ...), kam_db, kam_up,
# start_bridge (the harness Kamailio + the bridge in front of it)
. "$HERE/lib.sh"

# ----------------------------------------------------------------- servers
# Every start_* sets SPORT (where phones send), SGROUP (the process group of the server
# measured: Kamailio alone, or the bridge), UPORT/UGROUP (the bridge's upstream Kamailio,
# empty for Kamailio alone). WRAP (optional) is prefixed to the server's command line.

# start_kamailio DIR: Kamailio alone, bench/kamailio-presence.cfg
start_kamailio() {
  local dir=$1 args
  mkdir -p "$dir/kam"
  SPORT=$($PY freeport); UPORT=""; UGROUP=""
  kam_db "$dir/kam/kamailio.sqlite" || return 1
  args=(-f "$HERE/kamailio-presence.cfg" -DD -E -Y "$dir/kam" -w "$dir/kam" -m "$KAM_SHM" -M 16
        -A "SIP_PORT=$SPORT" -A "SERVER_ADDR=\"sip:127.0.0.1:$SPORT\""
        -A "DBURL=\"sqlite:///$dir/kam/kamailio.sqlite\"" -A "CTLSOCK=\"unix:$dir/kam/ctl\""
        -A "CHILDREN=$KAM_CHILDREN")
  timeout 10 kamailio "${args[@]}" -c >/dev/null 2>"$dir/kam/check.log" || {
    cat "$dir/kam/check.log" >&2; return 1; }
  start_group "$dir/kam/kamailio.log" ${WRAP:-} kamailio "${args[@]}"
  SGROUP=$BG; SCTL="unix:$dir/kam/ctl"
  kam_up "$dir/kam" "$SPORT" "$SGROUP"
}

start_server() {   # start_server SERVER DIR
  case $1 in
    kamailio) start_kamailio "$2" ;;
    bridge) start_bridge "$2" ;;
  esac
}

# ----------------------------------------------------------------- phones
targets_csv() {   # targets_csv FILE N: SEQUENTIAL list 3000 .. 3000+N-1
  { echo "SEQUENTIAL"; seq 3000 $((3000 + $2 - 1)); } >"$1"
}

scenario() {      # scenario OUT HOLD_MS
  sed "s/@HOLD_MS@/$2/g" "$HERE/scen/sub-wave.xml.in" >"$1"
}

# phones DIR RATE COUNT HOLD_MS TIMEOUT_S [CSV]: SIPp phones to the server -> BG
phones() {
  local dir=$1 rate=$2 count=$3 hold_ms=$4 tmo=$5 csv=${6:-$1/../targets.csv} port
  mkdir -p "$dir"
  scenario "$dir/sub-wave.xml" "$hold_ms"
  port=$($PY freeport)
  CWD="$dir" start_group "$dir/sipp.out" /usr/bin/time -f "TIME %e %U %S" -o "$dir/sipp.time" \
      sipp "127.0.0.1:$SPORT" -sf "$dir/sub-wave.xml" -inf "$csv" \
        -i 127.0.0.1 -p "$port" -t u1 -r "$rate" -m "$count" -l $((count + 100)) \
        -nostdin -default_behaviors none -buff_size 4194304 -recv_timeout 10000 \
        -timeout "${tmo}s" -timeout_error \
        -trace_stat -stf "$dir/stat.csv" -fd 1 -trace_rtt -rtt_freq 1 \
        -trace_err -error_file "$dir/err.log" -trace_screen -screen_file "$dir/screen.log"
  echo "$port" >"$dir/port"
}

# wait_established DIR N SECONDS GROUP: until N phones of DIR got their first NOTIFY
wait_established() {
  local dir=$1 want=$2 deadline=$(( $(date +%s) + $3 )) grp=$4 n=0
  while (( $(date +%s) < deadline )); do
    n=$($PY count_rtd "$dir" 2 2>/dev/null || echo 0)
    (( n >= want )) && { echo "$n"; return 0; }
    kill -0 "$grp" 2>/dev/null || break
    sleep 0.3
  done
  echo "$n"; return 1
}

# prewarm DIR: one long-held phone per target; for the bridge also wait until its
# upstream dialog and presence subscriptions are active for every target
prewarm() {
  local dir=$1 n deadline a
  local prate=${PREWARM_RATE:-500}
  phones "$dir/prewarm" "$prate" "$TARGETS" $(( LIFETIME * 1000 )) "$LIFETIME"
  PGROUP=$BG
  n=$(wait_established "$dir/prewarm" "$TARGETS" $(( TARGETS * 3 / prate + 60 )) "$PGROUP") || {
    echo "pre-warm: only $n/$TARGETS phones established" >&2; return 1; }
  if [[ -n "$UPORT" ]]; then
    deadline=$(( $(date +%s) + TARGETS / 10 + 60 ))
    while (( $(date +%s) < deadline )); do
      a=$($PY active "127.0.0.1:$HPORT")
      (( a >= TARGETS )) && break
      sleep 0.5
    done
    (( a >= TARGETS )) || {
      echo "pre-warm: upstream pairs active for $a/$TARGETS targets (the bridge's /metrics and /api/targets kept in $dir)" >&2
      curl -s -m 5 "http://127.0.0.1:$HPORT/metrics" >"$dir/prewarm-metrics.txt" 2>/dev/null
      curl -s -m 10 "http://127.0.0.1:$HPORT/api/targets" >"$dir/prewarm-targets.json" 2>/dev/null
      return 1; }
  fi
  sleep 2
}

# perf_start DIR: perf stat -e instructions on the server's processes -> PERFGROUP
perf_start() {
  PERFGROUP=""
  [[ "$PERF_OK" == 1 ]] || return 0
  local pids; pids=$($PY pids "$SGROUP")
  start_group "$1/perf.txt" perf stat -e instructions -x, -p "$pids"
  PERFGROUP=$BG
}
perf_stop() {
  [[ -n "$PERFGROUP" ]] || return 0
  local p; p=$(child_of "$PERFGROUP") && kill -INT "$p" 2>/dev/null
  sleep 0.5
  stop_group "$PERFGROUP"
}

summary_line() {
  python3 - "$1" <<'PY' >&2
import json, sys
s = json.load(open(sys.argv[1]))
print("%-22s created %s failed %s retrans %s | achieved %s/s | SUB->NOTIFY p50/p99/max %s/%s/%s ms | "
      "CPU %s ms/lifecycle | instr %s /lifecycle | peak PSS %s MB | drops %s/%s | %s" % (
      s['label'], s.get('created'), s.get('failed'), s.get('retrans'), s.get('achieved_rate'),
      s.get('p50'), s.get('p99'), s.get('max'), s.get('cpu_ms_per_lifecycle'),
      s.get('instr_per_lifecycle'), s.get('peak_pss_mb'), s.get('drops'), s.get('up_drops'),
      'PASS' if s.get('pass') else 'miss'))
PY
}

# load_step MODE SERVER RATE: one step with fresh processes
load_step() {
  local mode=$1 server=$2 rate=$3
  local label="$mode-$server-r$rate" dir="$BENCH_DIR/$mode-$server-r$rate"
  local count=$(( rate * STEP_SECS )) tmo c0 c1 d0 d1 u0 u1 rc load0
  rm -rf "$dir"; mkdir -p "$dir"
  targets_csv "$dir/targets.csv" "$TARGETS"
  start_server "$server" "$dir" || { cleanup; return 1; }
  if [[ "$mode" == steady ]]; then prewarm "$dir" || { cleanup; return 1; }; fi
  load0=$(loadavg)
  CWD="$dir" start_group "$dir/sampler.log" python3 "$HERE/compare.py" sample "$SGROUP" "$dir/samples.csv" 0.5
  local sgrp=$BG
  perf_start "$dir"
  sleep 1
  local uc0 uc1
  read -r c0 uc0 d0 u0 < <($PY snap "$SGROUP" "${UGROUP:-0}" "$SPORT" "${UPORT:-0}")
  tmo=$(( STEP_SECS * 2 + HOLD + 60 ))
  local t0; t0=$(date +%s.%N)
  phones "$dir/load" "$rate" "$count" $(( HOLD * 1000 )) "$tmo"
  local lgrp=$BG
  wait "$lgrp"; rc=$?; forget_group "$lgrp"
  local t1; t1=$(date +%s.%N)
  sleep 1
  read -r c1 uc1 d1 u1 < <($PY snap "$SGROUP" "${UGROUP:-0}" "$SPORT" "${UPORT:-0}")
  perf_stop
  touch "$dir/samples.csv.stop"; sleep 0.7; stop_group "$sgrp"
  cat >"$dir/meta.json" <<EOF
{"label": "$label", "mode": "$mode", "server": "$server", "rate": $rate, "count": $count,
 "targets": $TARGETS, "hold_s": $HOLD, "step_secs": $STEP_SECS, "sipp_rc": $rc,
 "t0": $t0, "t1": $t1, "cpu_ticks": [$c0, $c1], "up_cpu_ticks": [$uc0, $uc1],
 "drops": $((d1 - d0)), "up_drops": $((u1 - u0)), "loadavg": $load0,
 "p99_ms": $( [[ "$mode" == cold ]] && echo "$COLD_P99_MS" || echo "$P99_MS" ), "fail_pct": $FAIL_PCT}
EOF
  cleanup
  $PY step "$dir" >"$dir/step.json"
  summary_line "$dir/step.json"
  # exit status 0 = the step met the criterion
  python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1])).get("pass") else 3)' "$dir/step.json"
}

sweep() {   # sweep MODE
  local mode=$1 r s
  declare -A misses=()
  for r in $RATES; do
    for s in $SERVERS; do
      if (( STOP_AFTER > 0 && ${misses[$s]:-0} >= STOP_AFTER )); then
        echo "$mode-$s-r$r: skipped ($s missed the criterion at $STOP_AFTER rates in a row)" >&2
        continue
      fi
      if load_step "$mode" "$s" "$r"; then misses[$s]=0; else misses[$s]=$(( ${misses[$s]:-0} + 1 )); fi
    done
  done
}

# ----------------------------------------------------------------- memory
mem_run() {   # mem_run SERVER
  local server=$1 dir="$BENCH_DIR/mem-$1" n
  rm -rf "$dir"; mkdir -p "$dir"
  targets_csv "$dir/targets.csv" "$TARGETS"
  start_server "$server" "$dir" || { cleanup; return 1; }
  prewarm "$dir" || { cleanup; return 1; }
  local m0 m1 m2 s0="" s1="" s2=""
  shm() { [[ "$server" == kamailio ]] && $PY shm "$SCTL" || echo null; }
  sleep "$SETTLE_S"     # the pre-warm's transactions gone too
  m0=$($PY mem "$SGROUP"); s0=$(shm)
  local spread=$(( MEM_COUNT / MEM_RATE + 1 ))
  phones "$dir/load" "$MEM_RATE" "$MEM_COUNT" $(( (spread + SETTLE_S + 30) * 1000 )) $(( spread * 3 + SETTLE_S + 120 ))
  local lgrp=$BG
  n=$(wait_established "$dir/load" "$MEM_COUNT" $(( spread * 2 + 60 )) "$lgrp")
  sleep 1
  m1=$($PY mem "$SGROUP"); s1=$(shm)
  sleep "$SETTLE_S"
  m2=$($PY mem "$SGROUP"); s2=$(shm)
  cat >"$dir/meta.json" <<EOF
{"label": "mem-$server", "server": "$server", "count": $MEM_COUNT, "rate": $MEM_RATE, "targets": $TARGETS,
 "established": $n, "settle_s": $SETTLE_S,
 "mem_kb": {"before": [$m0], "established": [$m1], "settled": [$m2]},
 "shm_bytes": {"before": $s0, "established": $s1, "settled": $s2}, "loadavg": $(loadavg)}
EOF
  cleanup
  $PY memstep "$dir" | tee "$dir/mem.json" >&2
}

# ----------------------------------------------------------------- fan-out
fanout_run() {   # fanout_run SERVER
  local server=$1 dir="$BENCH_DIR/fanout-$1" n i port
  rm -rf "$dir"; mkdir -p "$dir"; chmod 777 "$dir"
  { echo "SEQUENTIAL"; echo 1002; } >"$dir/target.csv"
  start_server "$server" "$dir" || { cleanup; return 1; }
  start_group "$dir/dumpcap.log" dumpcap -q -i lo -f "udp port $SPORT" -B 64 -w "$dir/cap.pcapng"
  local dgroup=$BG
  sleep 2
  # watchers hold until no NOTIFY came for 20 s; the triggers come every 3 s
  phones "$dir/watch" "$WATCH_RATE" "$WATCHERS" 20000 600 "$dir/target.csv"
  local wgrp=$BG
  n=$(wait_established "$dir/watch" "$WATCHERS" $(( WATCHERS / 50 + 60 )) "$wgrp")
  echo "fanout-$server: $n/$WATCHERS watchers of 1002 established" >&2
  sleep 3
  local t_trig; t_trig=$(date +%s.%N)
  local c0; c0=$($PY cpu "$SGROUP")
  local tports=()
  for i in $(seq "$FAN_CYCLES"); do
    port=$($PY freeport); tports+=("$port")
    if [[ "$server" == kamailio ]]; then
      CWD="$dir" start_group "$dir/trigger-$i.out" sipp "127.0.0.1:$SPORT" -sf "$HERE/scen/publish-dialog.xml" \
          -s 1002 -i 127.0.0.1 -p "$port" -m 1 -nostdin -default_behaviors none \
          -timeout 30s -timeout_error -trace_err -error_file "$dir/trigger-$i.err.log"
    else
      CWD="$dir" start_group "$dir/trigger-$i.out" sipp "127.0.0.1:$UPORT" \
          -sf "$REPO/tests/harness/scenarios/register.xml" \
          -s 1002 -au 1002 -ap pass1002 -d 3000 -i 127.0.0.1 -p "$port" -m 1 -nostdin \
          -default_behaviors none -timeout 30s -timeout_error -trace_err -error_file "$dir/trigger-$i.err.log"
    fi
    local tg=$BG
    wait "$tg" || echo "fanout-$server trigger $i: sipp failed (see $dir/trigger-$i.*)" >&2
    forget_group "$tg"
    sleep 3
  done
  local c1; c1=$($PY cpu "$SGROUP")
  local wport; wport=$(cat "$dir/watch/port")
  sleep 1
  stop_group "$dgroup"
  cat >"$dir/meta.json" <<EOF
{"label": "fanout-$server", "server": "$server", "watchers": $WATCHERS, "established": $n,
 "cycles": $FAN_CYCLES, "server_port": $SPORT, "up_port": ${UPORT:-null}, "watch_port": $wport,
 "trigger_ports": [$(IFS=,; echo "${tports[*]}")], "t_triggers": $t_trig,
 "cpu_ticks": [$c0, $c1], "loadavg": $(loadavg)}
EOF
  cleanup
  tshark -r "$dir/cap.pcapng" -d "udp.port==$SPORT,sip" -T fields -E separator=';' \
    -e frame.time_epoch -e udp.srcport -e udp.dstport -e sip.Method -e sip.Status-Code \
    -e sip.CSeq.method -e sip.Event >"$dir/cap.fields" 2>"$dir/tshark.log"
  $PY fanout "$dir" | tee "$dir/fanout.json" >&2
}

# ----------------------------------------------------------------- instructions (valgrind)
instr_run() {   # instr_run SERVER
  local server=$1 dir="$BENCH_DIR/instr-$1"
  rm -rf "$dir"; mkdir -p "$dir/cg"
  targets_csv "$dir/targets.csv" "$TARGETS"
  WRAP="valgrind --tool=callgrind --trace-children=yes --callgrind-out-file=$dir/cg/callgrind.out.%p" \
    start_server "$server" "$dir" || { cleanup; return 1; }
  PREWARM_RATE=$INSTR_RATE prewarm "$dir" || { cleanup; return 1; }
  local pids; pids=$($PY pids "$SGROUP")
  # zero every process's counters after the pre-warm, run the load, dump them
  local p
  for p in ${pids//,/ }; do timeout 30 callgrind_control -z "$p" >/dev/null 2>&1; done
  sleep 1
  phones "$dir/load" "$INSTR_RATE" "$INSTR_COUNT" $(( HOLD * 1000 )) $(( INSTR_COUNT / INSTR_RATE * 3 + HOLD + 120 ))
  local lgrp=$BG
  wait "$lgrp"; local rc=$?; forget_group "$lgrp"
  sleep 1
  for p in ${pids//,/ }; do timeout 60 callgrind_control -d "after-load" "$p" >/dev/null 2>&1; done
  sleep 1
  cat >"$dir/meta.json" <<EOF
{"label": "instr-$server", "server": "$server", "count": $INSTR_COUNT, "rate": $INSTR_RATE, "sipp_rc": $rc,
 "pids": "$pids"}
EOF
  cleanup
  $PY instr "$dir" | tee "$dir/instr.json" >&2
}

machine() {
  {
    echo "date: $(date -Is)"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "kernel: $(uname -r)"
    echo "kamailio: $(kamailio -v 2>/dev/null | head -1)"
    echo "sipp: $(sipp -v 2>/dev/null | grep -m1 -i 'sipp v' | tr -d '\r')"
    echo "bridge: $("$BIN" --version 2>/dev/null) $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)$(git -C "$REPO" diff --quiet HEAD 2>/dev/null || echo '+dirty')"
    echo "perf instructions: $( [[ "$PERF_OK" == 1 ]] && echo yes || echo 'not counted on this machine (no hardware counter)')"
    echo "loadavg at start: $(cat /proc/loadavg)"
  } | tee "$BENCH_DIR/machine.txt" >&2
}

# ----------------------------------------------------------------- phases
need sipp sip-tester; need kamailio "kamailio kamailio-presence-modules kamailio-sqlite-modules"
need kamcmd kamailio; need sqlite3 sqlite3; need setsid util-linux; need timeout coreutils
PERF_OK=0
if [[ "$PERF" != 0 ]] && command -v perf >/dev/null \
   && perf stat -e instructions -x, -- true 2>&1 | grep -qE '^[0-9]+,'; then
  PERF_OK=1
fi
for ph in $PHASES; do
  case $ph in
    build)
      (cd "$REPO" && cargo build --release --bin blf-bridge) || exit 1 ;;
    steady|cold)
      [[ -x "$BIN" ]] || { echo "no $BIN (run the build phase)" >&2; exit 1; }
      [[ -s "$BENCH_DIR/machine.txt" ]] || machine
      sweep "$ph" ;;
    mem)
      [[ -x "$BIN" ]] || { echo "no $BIN (run the build phase)" >&2; exit 1; }
      [[ -s "$BENCH_DIR/machine.txt" ]] || machine
      for s in $SERVERS; do mem_run "$s"; done ;;
    fanout)
      [[ -x "$BIN" ]] || { echo "no $BIN (run the build phase)" >&2; exit 1; }
      need dumpcap tshark; need tshark tshark
      [[ -s "$BENCH_DIR/machine.txt" ]] || machine
      for s in $SERVERS; do fanout_run "$s"; done ;;
    instr)
      [[ -x "$BIN" ]] || { echo "no $BIN (run the build phase)" >&2; exit 1; }
      need valgrind valgrind; need callgrind_control valgrind
      [[ -s "$BENCH_DIR/machine.txt" ]] || machine
      for s in $SERVERS; do instr_run "$s"; done ;;
    report)
      [[ -s "$BENCH_DIR/machine.txt" ]] || machine
      $PY report "$BENCH_DIR" | tee "$BENCH_DIR/report.md" ;;
    *) echo "unknown phase $ph" >&2; exit 2 ;;
  esac
done
