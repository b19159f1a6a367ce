# Shared by bench/compare.sh and bench/scale.sh (sourced, not run): process groups,
# the harness Kamailio as the bridge's upstream, and the bridge in front of it.
#
# The sourcing script sets HERE (bench/), REPO, BIN (the bridge binary) and LIFETIME
# (seconds no process started here outlives, timeout -k), and may set before calling
# start_bridge (defaults in brackets):
#   SUB_AUTH (1: the upstream challenges the bridge's SUBSCRIBEs with 407)
#   UP_SHM (256 MB: the upstream Kamailio's shared memory)
#   UPSTREAM_RATE ("": product default)   FIRST_NOTIFY_MS ("": product default)
#   BRIDGE_MIN_EXPIRES ("": default 60)   BRIDGE_MAX_EXPIRES (3600)
#   BRIDGE_DEFAULT_EXPIRES (3600)         BRIDGE_UPSTREAM_EXPIRES (600)
#   WRAP (a command prefixed to the bridge's command line, e.g. valgrind)
# Every process runs in its own process group under timeout(1); `cleanup` (on EXIT,
# set here) ends them all. Loopback only, free ports.

LIB_PY="python3 $HERE/bench.py"
PATH="$PATH:/usr/sbin:/sbin"

# ----------------------------------------------------------------- processes
GROUPS_STARTED=()        # process-group ids of everything started in the background

# start_group LOG CMD...: CMD in a new process group (setsid), bounded by timeout(1),
# stdout+stderr to LOG, working directory $CWD (default: the current one) -> BG.
start_group() {
  local log=$1; shift
  ( cd "${CWD:-.}" && exec setsid timeout -s TERM -k 5 "$LIFETIME" "$@" ) </dev/null >"$log" 2>&1 &
  BG=$!
  GROUPS_STARTED+=("$BG")
}

# forget_group PGID: it ended by itself (wait-ed for); never signal it again.
forget_group() {
  local g keep=()
  for g in "${GROUPS_STARTED[@]}"; do [[ "$g" == "$1" ]] || keep+=("$g"); done
  GROUPS_STARTED=("${keep[@]}")
}

# TERM a process group, wait up to 5 s, then KILL what is left.
stop_group() {
  local g=$1 i
  kill -TERM -- "-$g" 2>/dev/null || { forget_group "$g"; return 0; }
  for i in $(seq 50); do
    kill -0 -- "-$g" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL -- "-$g" 2>/dev/null
  wait "$g" 2>/dev/null
  forget_group "$g"
  return 0
}

# TERM every group at once, wait up to 5 s for all, then KILL what is left.
cleanup() {
  local g i alive
  for g in "${GROUPS_STARTED[@]}"; do kill -TERM -- "-$g" 2>/dev/null; done
  for i in $(seq 50); do
    alive=0
    for g in "${GROUPS_STARTED[@]}"; do kill -0 -- "-$g" 2>/dev/null && { alive=1; break; }; done
    (( alive )) || break
    sleep 0.1
  done
  for g in "${GROUPS_STARTED[@]}"; do kill -KILL -- "-$g" 2>/dev/null; wait "$g" 2>/dev/null; done
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

loadavg() { cut -d' ' -f1 /proc/loadavg; }

# ----------------------------------------------------------------- Kamailio
# kam_db FILE [users]: the SQLite DB Kamailio's presence module insists on
kam_db() {
  local db=$1 sql=/usr/share/kamailio/db_sqlite
  rm -f "$db" "$db-journal" "$db-wal" "$db-shm"
  {
    cat "$sql/standard-create.sql" "$sql/presence-create.sql"
    if [[ "${2:-}" == users ]]; then
      cat "$sql/auth_db-create.sql" "$sql/usrloc-create.sql"
      grep -vE '^\s*(#|$)' "$REPO/tests/harness/users.txt" | while read -r u p; do
        echo "INSERT INTO subscriber (username, domain, password) VALUES ('$u','pbx.test','$p');"
      done
    fi
  } | timeout 20 sqlite3 "$db"
}

# kam_up DIR PORT PGID: wait until Kamailio on PORT answers OPTIONS and its ctl socket
kam_up() {
  local dir=$1 port=$2 grp=$3 i
  for i in $(seq 150); do
    if "$BIN" health --addr "127.0.0.1:$port" --timeout-ms 300 >/dev/null 2>&1 \
       && timeout 5 kamcmd -s "unix:$dir/ctl" core.uptime >/dev/null 2>&1; then
      return 0
    fi
    kill -0 "$grp" 2>/dev/null || break
    sleep 0.2
  done
  echo "kamailio on $port did not come up; log:" >&2; tail -20 "$dir/kamailio.log" >&2
  return 1
}

# start_upstream DIR: the harness Kamailio (tests/harness/kamailio.cfg) as the hosted
# PBX, in DIR/up -> UPORT, UGROUP
start_upstream() {
  local dir=$1 args
  mkdir -p "$dir/up"
  UPORT=$($LIB_PY freeport)
  kam_db "$dir/up/kamailio.sqlite" users || return 1
  args=(-f "$REPO/tests/harness/kamailio.cfg" -DD -E -Y "$dir/up" -w "$dir/up" -m "${UP_SHM:-256}" -M 8
        -A "SIP_PORT=$UPORT" -A "SERVER_ADDR=\"sip:127.0.0.1:$UPORT\""
        -A "DBURL=\"sqlite:///$dir/up/kamailio.sqlite\"" -A "CTLSOCK=\"unix:$dir/up/ctl\""
        -A "SUB_AUTH_DEFAULT=${SUB_AUTH:-1}" -A "SUB_AUTH_INDLG_DEFAULT=0"
        -A "DUMMY_DIALOG=1" -A "DUMMY_PRESENCE=0")
  timeout 10 kamailio "${args[@]}" -c >/dev/null 2>"$dir/up/check.log" || {
    cat "$dir/up/check.log" >&2; return 1; }
  start_group "$dir/up/kamailio.log" kamailio "${args[@]}"
  UGROUP=$BG
  kam_up "$dir/up" "$UPORT" "$UGROUP"
}

# ----------------------------------------------------------------- the bridge
# start_bridge DIR: the harness Kamailio (start_upstream) + the release bridge in front
# of it, in DIR/bridge -> SPORT (where phones send), HPORT (HTTP), SGROUP, UPORT, UGROUP
start_bridge() {
  local dir=$1 i
  start_upstream "$dir" || return 1
  mkdir -p "$dir/bridge"
  SPORT=$($LIB_PY freeport); HPORT=$($LIB_PY freeport)
  cat >"$dir/bridge/bridge.toml" <<EOF
[listen]
udp = "127.0.0.1:$SPORT"

[upstream]
proxy = "127.0.0.1:$UPORT"
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
max_expires = ${BRIDGE_MAX_EXPIRES:-3600}
default_expires = ${BRIDGE_DEFAULT_EXPIRES:-3600}
upstream_expires = ${BRIDGE_UPSTREAM_EXPIRES:-600}
$( [[ -n "${BRIDGE_MIN_EXPIRES:-}" ]] && echo "min_expires = $BRIDGE_MIN_EXPIRES" )
$( [[ -n "${FIRST_NOTIFY_MS:-}" ]] && echo "first_notify_timeout_ms = $FIRST_NOTIFY_MS" )
$( [[ -n "${UPSTREAM_RATE:-}" ]] && echo "upstream_rate = $UPSTREAM_RATE" )

[security]
# every simulated phone is on 127.0.0.1: one source for the per-source caps and the
# rate limit of issue 9; open them so the run measures the bridge, not the limiter
watchers = "allowed"
max_targets = 1000000
max_subscriptions_per_source = 1000000
max_subscriptions_per_target = 1000000
max_tcp_per_source = 100000
max_pending_registrations = 1000000
rate_per_source = 1000000

[state]
dir = ""

[http]
listen = "127.0.0.1:$HPORT"
EOF
  "$BIN" check --config "$dir/bridge/bridge.toml" >"$dir/bridge/check.log" 2>&1 || {
    cat "$dir/bridge/check.log" >&2; return 1; }
  CWD="$dir/bridge" start_group "$dir/bridge/bridge.log" ${WRAP:-} "$BIN" run --config "$dir/bridge/bridge.toml"
  SGROUP=$BG
  for i in $(seq 150); do
    "$BIN" health --addr "127.0.0.1:$SPORT" --timeout-ms 300 >/dev/null 2>&1 && return 0
    kill -0 "$SGROUP" 2>/dev/null || break
    sleep 0.2
  done
  echo "bridge did not answer; log:" >&2; tail -20 "$dir/bridge/bridge.log" >&2
  return 1
}
