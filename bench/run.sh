#!/bin/bash
# Subscription-translation benchmark: SIPp "Grandstream Wave" phones -> blf-bridge
# (release build) -> Kamailio (tests/harness/kamailio.cfg) as the hosted PBX.
# Loopback only, free ports, its own temporary directory, every process it starts
# is killed at the end (trap), every wait is bounded. A benchmark, not a test.
#
#   bench/run.sh                 all phases: build sweep mem fanout report
#   bench/run.sh sweep report    some phases
#
# Phases
#   build   cargo build --release --bin blf-bridge
#   sweep   for each rate in RATES, REPEAT times: fresh Kamailio + bridge, COUNT phone
#           subscriptions over TARGETS targets at `sipp -r RATE`; each phone holds its
#           subscription until all are established, then unsubscribes
#   mem     COUNT subscriptions at MEM_RATE, held; bridge VmRSS and CPU (/proc) before,
#           when all are established, SETTLE_S later (transactions gone), after the
#           unsubscribes; MEM_REPEAT times
#   fanout  WATCHERS phones watching ONE target (1002); a SIPp phone REGISTERs 1002
#           and un-REGISTERs it CYCLES times (Kamailio -> bridge: presence NOTIFY);
#           dumpcap on lo, port of the bridge: upstream NOTIFY in -> WATCHERS-th
#           phone NOTIFY out; FAN_REPEAT times
#   resume  RESUME_COUNT phones over RESUME_TARGETS targets, held (store on); the bridge is
#           killed with SIGKILL and started again on its state directory with
#           upstream_rate = RESUME_RATE; dumpcap on lo: time from the new process's start to
#           the last phone's resumed NOTIFY on the wire, upstream refreshes per second,
#           state file bytes per subscription
#   report  markdown summary of everything in the results directory
#
# Knobs (environment): RATES ("500 1000 2000 3000 4000 5000 6000"), REPEAT (3),
# COUNT (2000), TARGETS (100), MEM_RATE (500), MEM_REPEAT (3), SETTLE_S (40),
# WATCHERS (100), WATCH_RATE (200), CYCLES (5), FAN_REPEAT (1), PERF (0; 1 = perf record
# the bridge during each load step into <step>/perf.data), SUB_AUTH (1: Kamailio answers the
# bridge's SUBSCRIBEs with 407), RUST_LOG (info, the bridge's default),
# BENCH_DIR (default: a new mktemp -d; results stay there), BIN (the bridge binary),
# STORE (1: the state store on, in the step's directory; 0: `[state] dir = ""`),
# UPSTREAM_RATE (1000: `[subscriptions] upstream_rate`, high enough that pacing does not
# shape this benchmark; the product default is 50).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
PHASES=${*:-"build sweep mem fanout report"}
RATES=${RATES:-"500 1000 2000 3000 4000 5000 6000"}
REPEAT=${REPEAT:-3}
COUNT=${COUNT:-2000}
TARGETS=${TARGETS:-100}
MEM_RATE=${MEM_RATE:-500}
MEM_REPEAT=${MEM_REPEAT:-3}
SETTLE_S=${SETTLE_S:-40}
WATCHERS=${WATCHERS:-100}
CYCLES=${CYCLES:-5}
FAN_REPEAT=${FAN_REPEAT:-1}
SUB_AUTH=${SUB_AUTH:-1}
STORE=${STORE:-1}
RESUME_COUNT=${RESUME_COUNT:-10000}
RESUME_TARGETS=${RESUME_TARGETS:-1000}
RESUME_RATE=${RESUME_RATE:-50}
UPSTREAM_RATE=${UPSTREAM_RATE:-1000}
export RUST_LOG=${RUST_LOG:-info}
BIN=${BIN:-$REPO/target/release/blf-bridge}
LIFETIME=1800            # no process started here outlives this (timeout -k)
PATH="$PATH:/usr/sbin:/sbin"
PY="python3 $HERE/bench.py"

BENCH_DIR=${BENCH_DIR:-$(mktemp -d /tmp/blf-bench.XXXXXX)}
mkdir -p "$BENCH_DIR"
BENCH_DIR="$(cd "$BENCH_DIR" && pwd)"
echo "results in $BENCH_DIR" >&2

# ----------------------------------------------------------------- processes
GROUPS_STARTED=()        # process-group ids of everything started in the background

# start_group LOG CMD...: run CMD in a new process group (setsid), bounded by
# timeout(1), with stdout+stderr to LOG and the working directory $CWD (default:
# the current one); its process-group id is in $BG.
start_group() {
  local log=$1; shift
  ( cd "${CWD:-.}" && exec setsid timeout -s TERM -k 5 "$LIFETIME" "$@" ) </dev/null >"$log" 2>&1 &
  BG=$!
  GROUPS_STARTED+=("$BG")
}

# forget_group PGID: it has ended by itself (wait-ed for); never signal it again.
forget_group() {
  local g keep=()
  for g in "${GROUPS_STARTED[@]}"; do [[ "$g" == "$1" ]] || keep+=("$g"); done
  GROUPS_STARTED=("${keep[@]}")
}

# TERM a process group, wait up to 5 s, then KILL what is left.
stop_group() {
  local g=$1 i
  kill -TERM -- "-$g" 2>/dev/null || return 0
  for i in $(seq 50); do
    kill -0 -- "-$g" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL -- "-$g" 2>/dev/null
  wait "$g" 2>/dev/null
  forget_group "$g"
  return 0
}

cleanup() {
  local g
  for g in "${GROUPS_STARTED[@]}"; do stop_group "$g"; done
  GROUPS_STARTED=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The pid of the program `timeout` runs (its only child).
child_of() {
  local i c
  for i in $(seq 50); do
    c=$(cat "/proc/$1/task/$1/children" 2>/dev/null | awk '{print $1}')
    [[ -n "$c" ]] && { echo "$c"; return 0; }
    sleep 0.1
  done
  return 1
}

need() { command -v "$1" >/dev/null || { echo "missing $1 (apt-get install -y $2)" >&2; exit 1; }; }

# ----------------------------------------------------------------- Kamailio
# kam_start DIR: harness PBX (tests/harness/kamailio.cfg) on a free port -> KPORT, KGROUP.
kam_start() {
  local dir=$1 db sql=/usr/share/kamailio/db_sqlite i
  KPORT=$($PY freeport)
  db="$dir/kamailio.sqlite"
  rm -f "$db" "$db-journal" "$dir/ctl"
  {
    cat "$sql/standard-create.sql" "$sql/auth_db-create.sql" "$sql/presence-create.sql" "$sql/usrloc-create.sql"
    grep -vE '^\s*(#|$)' "$REPO/tests/harness/users.txt" | while read -r u p; do
      echo "INSERT INTO subscriber (username, domain, password) VALUES ('$u','pbx.test','$p');"
    done
  } | timeout 20 sqlite3 "$db" || return 1
  # shm 128 MB (the harness uses 32): 200 upstream subscriptions are small, but
  # the bursts of challenged SUBSCRIBEs keep tm cells for the wait timer.
  KARGS=(-f "$REPO/tests/harness/kamailio.cfg" -DD -E -Y "$dir" -w "$dir" -m 128 -M 8
         -A "SIP_PORT=$KPORT"
         -A "SERVER_ADDR=\"sip:127.0.0.1:$KPORT\""
         -A "DBURL=\"sqlite:///$db\""
         -A "CTLSOCK=\"unix:$dir/ctl\""
         -A "SUB_AUTH_DEFAULT=$SUB_AUTH"
         -A "SUB_AUTH_INDLG_DEFAULT=0"
         -A "DUMMY_DIALOG=1"
         -A "DUMMY_PRESENCE=0")
  timeout 10 kamailio "${KARGS[@]}" -c >/dev/null 2>"$dir/kamailio-check.log" || {
    cat "$dir/kamailio-check.log" >&2; return 1; }
  start_group "$dir/kamailio.log" kamailio "${KARGS[@]}"
  KGROUP=$BG
  for i in $(seq 100); do
    if "$BIN" health --addr "127.0.0.1:$KPORT" --timeout-ms 300 >/dev/null 2>&1 \
       && timeout 5 kamcmd -s "unix:$dir/ctl" core.uptime >/dev/null 2>&1; then
      return 0
    fi
    kill -0 "$KGROUP" 2>/dev/null || break
    sleep 0.1
  done
  echo "kamailio did not come up; log:" >&2; tail -20 "$dir/kamailio.log" >&2
  return 1
}

# ----------------------------------------------------------------- the bridge
# bridge_start DIR: blf-bridge in front of 127.0.0.1:$KPORT -> BPORT, BGROUP, BPID.
bridge_start() {
  local dir=$1 i
  BPORT=$($PY freeport)
  cat >"$dir/bridge.toml" <<EOF
[listen]
udp = "127.0.0.1:$BPORT"

[upstream]
proxy = "127.0.0.1:$KPORT"
domain = "pbx.test"
transport = "udp"

[[account]]
user = "1001"
password = "pass1001"

[[account]]
user = "1002"
password = "pass1002"

[[account]]
user = "1003"
password = "pass1003"

[subscriptions]
# phones ask for 3600 s; a run lasts minutes, so nothing expires or refreshes
min_expires = 60
max_expires = 3600
default_expires = 3600
# Kamailio's presence max_expires is 3600
upstream_expires = 600
first_notify_timeout_ms = 2000
linger = 30
EOF
  # LEGACY_CONFIG=1: a binary older than the store and the pacer (for comparisons)
  if [[ "${LEGACY_CONFIG:-0}" != 1 ]]; then
    cat >>"$dir/bridge.toml" <<EOF
upstream_rate = $UPSTREAM_RATE

[security]
# every simulated phone is on 127.0.0.1, one source for the per-source caps
# and rate limit of issue 9: open them so the run measures the bridge
watchers = "allowed"
max_targets = 1000000
max_subscriptions_per_source = 1000000
max_subscriptions_per_target = 1000000
max_tcp_per_source = 100000
max_pending_registrations = 1000000
rate_per_source = 1000000

[state]
dir = "$( [[ "$STORE" == 1 ]] && echo "$dir/state" )"
EOF
  fi
  "$BIN" check --config "$dir/bridge.toml" >"$dir/bridge-check.log" 2>&1 || {
    cat "$dir/bridge-check.log" >&2; return 1; }
  start_group "$dir/bridge.log" "$BIN" run --config "$dir/bridge.toml"
  BGROUP=$BG
  BPID=$(child_of "$BGROUP") || { echo "bridge did not start" >&2; return 1; }
  for i in $(seq 100); do
    "$BIN" health --addr "127.0.0.1:$BPORT" --timeout-ms 300 >/dev/null 2>&1 && return 0
    kill -0 "$BPID" 2>/dev/null || break
    sleep 0.1
  done
  echo "bridge did not answer; log:" >&2; tail -20 "$dir/bridge.log" >&2
  return 1
}

stop_all() {
  cleanup
}

# ----------------------------------------------------------------- helpers
targets_csv() {   # targets_csv FILE N: SEQUENTIAL list 3000 .. 3000+N-1
  { echo "SEQUENTIAL"; seq 3000 $((3000 + $2 - 1)); } >"$1"
}

scenario() {      # scenario OUT HOLD_MS
  sed "s/@HOLD_MS@/$2/g" "$HERE/scen/sub-wave.xml.in" >"$1"
}

cpu_rss() { $PY proc "$BPID"; }     # "<ticks> <rss_kb>"

loadavg() { cut -d' ' -f1 /proc/loadavg; }

# load_step LABEL PHASE RATE SETTLE_S: one run with a fresh Kamailio and bridge.
load_step() {
  local label=$1 phase=$2 rate=$3 settle=$4
  local dir="$BENCH_DIR/$label" hold_ms spread_s tmo sp est deadline n
  rm -rf "$dir"; mkdir -p "$dir"
  kam_start "$dir" && bridge_start "$dir" || { stop_all; return 1; }
  targets_csv "$dir/targets.csv" "$TARGETS"
  spread_s=$(( (COUNT + rate - 1) / rate ))
  # each phone holds until all are established (+ settle), then unsubscribes
  hold_ms=$(( (spread_s + 5 + settle) * 1000 ))
  scenario "$dir/sub-wave.xml" "$hold_ms"
  tmo=$(( spread_s * 2 + hold_ms / 1000 + 60 ))
  local load0; load0=$(loadavg)
  if [[ "${PERF:-0}" == 1 ]]; then   # optional profile of the bridge during the step
    start_group "$dir/perf.log" perf record -F 999 -g -p "$BPID" -o "$dir/perf.data"
  fi
  sleep 1
  read -r c0 m0 < <(cpu_rss)
  local d0 k0; d0=$($PY udpdrops "$BPORT"); k0=$($PY udpdrops "$KPORT")
  local sport; sport=$($PY freeport)
  CWD="$dir" start_group "$dir/sipp.out" /usr/bin/time -f "TIME %e %U %S" -o "$dir/sipp.time" \
      sipp "127.0.0.1:$BPORT" -sf "$dir/sub-wave.xml" -inf "$dir/targets.csv" \
        -i 127.0.0.1 -p "$sport" -t u1 -r "$rate" -m "$COUNT" -l $((COUNT + 100)) \
        -nostdin -default_behaviors none -buff_size 4194304 -recv_timeout 30000 \
        -timeout "${tmo}s" -timeout_error \
        -trace_stat -stf "$dir/stat.csv" -fd 1 -trace_rtt -rtt_freq 1 \
        -trace_err -error_file "$dir/err.log" -trace_screen -screen_file "$dir/screen.log"
  sp=$BG
  # wait (bounded) until every phone got its first NOTIFY (rtd2 samples)
  deadline=$(( $(date +%s) + spread_s * 2 + 30 ))
  est=0
  while (( $(date +%s) < deadline )); do
    n=$($PY count_rtd "$(ls "$dir"/*_rtt.csv 2>/dev/null | head -1)" 2 2>/dev/null || echo 0)
    if (( n >= COUNT )); then est=1; break; fi
    kill -0 "$sp" 2>/dev/null || break
    sleep 0.2
  done
  sleep 0.5   # the phones' 200s to those NOTIFYs
  read -r c1 m1 < <(cpu_rss)
  local c2=null m2=null
  if (( settle > 0 && est )); then
    sleep "$settle"
    read -r c2 m2 < <(cpu_rss)
  fi
  wait "$sp"; local rc=$?; forget_group "$sp"
  sleep 1
  read -r c3 m3 < <(cpu_rss)
  local d1 k1; d1=$($PY udpdrops "$BPORT"); k1=$($PY udpdrops "$KPORT")
  cat >"$dir/meta.json" <<EOF
{"label": "$label", "phase": "$phase", "rate": $rate, "count": $COUNT, "targets": $TARGETS,
 "hold_ms": $hold_ms, "settle_s": $settle, "sipp_rc": $rc, "all_established": $est,
 "cpu": {"before": $c0, "established": $c1, "settled": $c2, "end": $c3},
 "rss_kb": {"before": $m0, "established": $m1, "settled": $m2, "end": $m3},
 "udp_drops": $((d1 - d0)), "kam_udp_drops": $((k1 - k0)), "loadavg": $load0, "bridge_port": $BPORT, "kam_port": $KPORT}
EOF
  stop_all
  # sanity: upstream pairs created, warnings of the bridge
  echo "{\"targets_subscribed\": $(grep -c 'watching new target' "$dir/bridge.log"), \"bridge_warnings\": $(grep -cE ' (WARN|ERROR) ' "$dir/bridge.log")}" >"$dir/sanity.json"
  $PY step "$dir" >"$dir/step.json"
  python3 - "$dir/step.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
r2 = s.get('rtd2', {})
print("%-14s rate %5d: created %s ok %s failed %s retrans %s extra NOTIFYs %s | achieved %s/s | SUB->NOTIFY p50/p99/max %s/%s/%s ms | "
      "CPU %s ms/sub | RSS %s B/sub (settled %s) | drops %s (kamailio %s) | sipp rc %s" % (
      s['label'], s['rate'], s.get('TotalCallCreated'), s.get('SuccessfulCall(C)'), s.get('FailedCall(C)'),
      s.get('Retransmissions(C)'), s.get('hold_notify(C)'), s.get('achieved_rate'), r2.get('p50'), r2.get('p99'), r2.get('max'),
      s.get('cpu_ms_per_sub_establish'), s.get('rss_bytes_per_sub_established'),
      s.get('rss_bytes_per_sub_settled'), s.get('udp_drops'), s.get('kam_udp_drops'), s.get('sipp_rc')), file=sys.stderr)
PY
  return 0
}

# fanout_run LABEL
fanout_run() {
  local label=$1 dir="$BENCH_DIR/$1" wport rport sp i
  rm -rf "$dir"; mkdir -p "$dir"; chmod 777 "$dir"
  kam_start "$dir" && bridge_start "$dir" || { stop_all; return 1; }
  { echo "SEQUENTIAL"; echo 1002; } >"$dir/target.csv"
  # watchers hold until no NOTIFY for 20 s; triggers come every few seconds
  scenario "$dir/sub-wave.xml" 20000
  start_group "$dir/dumpcap.log" dumpcap -q -i lo -f "udp port $BPORT" -B 64 -w "$dir/cap.pcapng"
  local dgroup=$BG
  sleep 2
  wport=$($PY freeport)
  CWD="$dir" start_group "$dir/sipp.out" sipp "127.0.0.1:$BPORT" -sf "$dir/sub-wave.xml" -inf "$dir/target.csv" \
      -i 127.0.0.1 -p "$wport" -t u1 -r "${WATCH_RATE:-200}" -m "$WATCHERS" -l $((WATCHERS + 10)) \
      -nostdin -default_behaviors none -buff_size 4194304 -recv_timeout 30000 \
      -timeout 180s -timeout_error -trace_stat -stf "$dir/stat.csv" -fd 1 -trace_rtt -rtt_freq 1 \
      -trace_err -error_file "$dir/err.log" -trace_screen -screen_file "$dir/screen.log"
  sp=$BG
  local deadline=$(( $(date +%s) + 60 )) n=0
  while (( $(date +%s) < deadline )); do
    n=$($PY count_rtd "$(ls "$dir"/*_rtt.csv 2>/dev/null | head -1)" 2 2>/dev/null || echo 0)
    (( n >= WATCHERS )) && break
    kill -0 "$sp" 2>/dev/null || break
    sleep 0.2
  done
  echo "$label: $n/$WATCHERS watchers of 1002 established" >&2
  sleep 2
  local t_trig; t_trig=$(date +%s.%N)
  DROPS0=$($PY udpdrops "$BPORT")
  read -r c0 m0 < <(cpu_rss)
  local ns0; ns0=$($PY cpu_ns "$BPID")
  for i in $(seq "$CYCLES"); do
    rport=$($PY freeport)
    CWD="$dir" start_group "$dir/register-$i.out" sipp "127.0.0.1:$KPORT" \
        -sf "$REPO/tests/harness/scenarios/register.xml" \
        -s 1002 -au 1002 -ap pass1002 -d 3000 -i 127.0.0.1 -p "$rport" -m 1 -nostdin \
        -default_behaviors none -timeout 30s -timeout_error -trace_err -error_file "$dir/register-$i.err.log"
    local rg=$BG
    wait "$rg" || echo "register cycle $i: sipp failed (see $dir/register-$i.*)" >&2
    forget_group "$rg"
    sleep 3
  done
  read -r c1 m1 < <(cpu_rss)
  local ns1; ns1=$($PY cpu_ns "$BPID")
  local d0=$DROPS0 d1; d1=$($PY udpdrops "$BPORT")
  wait "$sp"; local rc=$?; forget_group "$sp"
  sleep 1
  stop_group "$dgroup"
  cat >"$dir/meta.json" <<EOF
{"label": "$label", "phase": "fanout", "watchers": $WATCHERS, "cycles": $CYCLES, "sipp_rc": $rc,
 "bridge_port": $BPORT, "kam_port": $KPORT, "watch_port": $wport, "t_triggers": $t_trig,
 "cpu": {"before": $c0, "after": $c1}, "rss_kb": {"before": $m0, "after": $m1},
 "cpu_ns": {"before": $ns0, "after": $ns1},
 "udp_drops_during_triggers": $((d1 - d0)), "loadavg": $(loadavg)}
EOF
  stop_all
  tshark -r "$dir/cap.pcapng" -d "udp.port==$BPORT,sip" -T fields -E separator=';' \
    -e frame.time_epoch -e udp.srcport -e udp.dstport -e sip.Method -e sip.Status-Code \
    -e sip.CSeq.method -e sip.Event >"$dir/cap.fields" 2>"$dir/tshark.log"
  $PY fanout "$dir/cap.fields" "$dir/meta.json" >"$dir/fanout.json"
  python3 - "$dir/fanout.json" "$label" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1])):
    print("%s trigger %d (%s): %d phone NOTIFYs, first %s ms, median %s ms, last %s ms" % (
        sys.argv[2], r['trigger'], r['event'], r['phone_notifies'], r.get('first_ms'),
        r.get('median_ms'), r.get('nth_ms', r.get('last_ms'))), file=sys.stderr)
PY
}

machine() {
  {
    echo "date: $(date -Is)"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "kernel: $(uname -r)"
    echo "kamailio: $(kamailio -v 2>/dev/null | head -1)"
    echo "sipp: $(sipp -v 2>/dev/null | grep -m1 -i 'sipp v' | tr -d '\r')"
    echo "bridge: $("$BIN" --version 2>/dev/null) $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)"
    echo "loadavg at start: $(cat /proc/loadavg)"
  } | tee "$BENCH_DIR/machine.txt" >&2
}

# resume_run LABEL (see the header: phase resume)
resume_run() {
  local label=$1 dir="$BENCH_DIR/$1" sp sport n deadline
  rm -rf "$dir"; mkdir -p "$dir"; chmod 777 "$dir"
  local COUNT=$RESUME_COUNT TARGETS=$RESUME_TARGETS STORE=1 UPSTREAM_RATE=1000
  kam_start "$dir" && bridge_start "$dir" || { stop_all; return 1; }
  targets_csv "$dir/targets.csv" "$TARGETS"
  local spread_s=$(( COUNT / 1000 + 1 ))
  local hold_s=$(( spread_s + 40 + 2 * TARGETS / RESUME_RATE + 60 ))
  scenario "$dir/sub-wave.xml" $(( hold_s * 1000 ))
  sport=$($PY freeport)
  CWD="$dir" start_group "$dir/sipp.out" sipp "127.0.0.1:$BPORT" -sf "$dir/sub-wave.xml" -inf "$dir/targets.csv" \
      -i 127.0.0.1 -p "$sport" -t u1 -r 1000 -m "$COUNT" -l $((COUNT + 100)) \
      -nostdin -default_behaviors none -buff_size 4194304 -recv_timeout 60000 \
      -timeout $(( hold_s + 120 ))s -timeout_error -trace_stat -stf "$dir/stat.csv" -fd 1 -trace_rtt -rtt_freq 1 \
      -trace_err -error_file "$dir/err.log" -trace_screen -screen_file "$dir/screen.log"
  sp=$BG
  deadline=$(( $(date +%s) + spread_s * 3 + 60 )); n=0
  while (( $(date +%s) < deadline )); do
    n=$($PY count_rtd "$(ls "$dir"/*_rtt.csv 2>/dev/null | head -1)" 2 2>/dev/null || echo 0)
    (( n >= COUNT )) && break
    kill -0 "$sp" 2>/dev/null || break
    sleep 0.5
  done
  echo "$label: $n/$COUNT phone subscriptions established" >&2
  sleep 3
  local store_bytes; store_bytes=$(stat -c %s "$dir/state/state.redb")
  read -r _ m0 < <(cpu_rss)
  start_group "$dir/dumpcap.log" dumpcap -q -i lo -f "udp port $BPORT" -B 256 -w "$dir/cap.pcapng"
  sleep 2
  # crash, then start again on the same state directory, paced at RESUME_RATE
  kill -KILL -- "-$BGROUP" 2>/dev/null; forget_group "$BGROUP"
  sed -i "s/^upstream_rate = .*/upstream_rate = $RESUME_RATE/" "$dir/bridge.toml"
  local t0; t0=$(date +%s.%N)
  start_group "$dir/bridge-restarted.log" "$BIN" run --config "$dir/bridge.toml"
  BGROUP=$BG; BPID=$(child_of "$BGROUP")
  # until every phone counted its resumed NOTIFY (hold_notify), bounded
  deadline=$(( $(date +%s) + 2 * TARGETS / RESUME_RATE + 60 )); n=0
  while (( $(date +%s) < deadline )); do
    n=$(python3 -c 'import sys
l=[x for x in open(sys.argv[1]) if x.strip()]
h=l[0].rstrip("\n").split(";"); v=dict(zip(h,l[-1].rstrip("\n").split(";")))
print(int(v.get("hold_notify(C)","0") or 0))' "$dir/stat.csv" 2>/dev/null || echo 0)
    (( n >= COUNT )) && break
    sleep 1
  done
  sleep 2
  read -r c1 m1 < <(cpu_rss)
  stop_all
  tshark -r "$dir/cap.pcapng" -d "udp.port==$BPORT,sip" -T fields -E separator=';' \
    -e frame.time_epoch -e udp.srcport -e udp.dstport -e sip.Method -e sip.Status-Code \
    >"$dir/cap.fields" 2>"$dir/tshark.log"
  python3 - "$dir" "$t0" "$BPORT" "$KPORT" "$COUNT" "$TARGETS" "$store_bytes" "$m0" "$m1" "$n" "$RESUME_RATE" <<'PY' | tee "$dir/resume.json" >&2
import json, sys
d, t0, bport, kport, count, targets, store, m0, m1, resumed, rate = sys.argv[1:]
t0 = float(t0)
notifies, refreshes = [], []
for line in open(d + "/cap.fields"):
    f = line.rstrip("\n").split(";")
    if len(f) < 4 or not f[0]:
        continue
    t, src, dst, method = float(f[0]), f[1], f[2], f[3]
    if t < t0 or src != bport:
        continue
    if method == "NOTIFY" and dst != kport:
        notifies.append(t - t0)
    elif method == "SUBSCRIBE" and dst == kport:
        refreshes.append(t - t0)
per_s = {}
for t in refreshes:
    per_s[int(t)] = per_s.get(int(t), 0) + 1
print(json.dumps({
    "phones": int(count), "targets": int(targets), "upstream_rate": int(rate),
    "phones_resumed": int(resumed),
    "phone_notifies_after_restart": len(notifies),
    "first_phone_notify_s": round(min(notifies), 3) if notifies else None,
    "last_phone_notify_s": round(max(notifies), 3) if notifies else None,
    "bound_s": 2 * int(targets) / int(rate) + 5,
    "upstream_subscribes_after_restart": len(refreshes),
    "max_upstream_subscribes_in_a_second": max(per_s.values()) if per_s else 0,
    "store_bytes": int(store), "store_bytes_per_phone_sub": round(int(store) / int(count), 1),
    "rss_kb_before_kill": int(m0), "rss_kb_after_resume": int(m1),
}, indent=1))
PY
}

# ----------------------------------------------------------------- phases
need sipp sip-tester; need kamailio "kamailio kamailio-presence-modules kamailio-sqlite-modules"
need kamcmd kamailio; need sqlite3 sqlite3; need setsid util-linux; need timeout coreutils
for ph in $PHASES; do
  case $ph in
    build)
      (cd "$REPO" && cargo build --release --bin blf-bridge) || exit 1 ;;
    sweep)
      [[ -x "$BIN" ]] || { echo "no $BIN (run the build phase)" >&2; exit 1; }
      machine
      for rep in $(seq "$REPEAT"); do
        for r in $RATES; do load_step "sweep-r$r-$rep" sweep "$r" 0; done
      done ;;
    mem)
      [[ -x "$BIN" ]] || { echo "no $BIN (run the build phase)" >&2; exit 1; }
      machine
      for rep in $(seq "$MEM_REPEAT"); do load_step "mem-r$MEM_RATE-$rep" mem "$MEM_RATE" "$SETTLE_S"; done ;;
    fanout)
      [[ -x "$BIN" ]] || { echo "no $BIN (run the build phase)" >&2; exit 1; }
      need dumpcap tshark; need tshark tshark
      machine
      for rep in $(seq "$FAN_REPEAT"); do fanout_run "fanout-w$WATCHERS-$rep"; done ;;
    resume)
      [[ -x "$BIN" ]] || { echo "no $BIN (run the build phase)" >&2; exit 1; }
      need dumpcap tshark; need tshark tshark
      machine
      resume_run "resume-$RESUME_COUNT-r$RESUME_RATE" ;;
    report)
      $PY report "$BENCH_DIR" | tee "$BENCH_DIR/report.md" ;;
    *) echo "unknown phase $ph" >&2; exit 2 ;;
  esac
done
