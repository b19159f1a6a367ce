#!/bin/bash
# Issue 9's floods against the REAL release binary with its default security
# configuration, in front of the harness Kamailio (tests/harness/kamailio.cfg),
# on loopback. One line per bound of the issue, with the measured figure and
# PASS/FAIL; the attacker is bench/attack.py (Python 3, standard library).
# A benchmark, not a test: about 5 minutes.
#
#   bench/floods.sh                      every flood
#   bench/floods.sh sub5k tcp            some of them
#
# Floods (each with a fresh Kamailio and a fresh bridge):
#   sub5k     5,000 phone SUBSCRIBEs to distinct non-existent targets from one
#             source in 25 s (never answering a NOTIFY); upstream SUBSCRIBEs until
#             30 s after (captured on lo at Kamailio's port), their rate in every
#             second from 25 s to 60 s after, the bridge's RSS (before vs peak)
#   sub20k    the same with 20,000 in 50 s
#   contacts  1,500 unauthenticated REGISTERs × 700 Contacts in 15 s, from one
#             source and from 50 sources: RSS
#   tcp       1,000 TCP connections from 127.0.0.99 (outside allow) each sending
#             64 KB of an unfinished header: open 1 s after connect, RSS, an
#             allowed phone's TCP OPTIONS (127.0.0.2) answered throughout; then the
#             same from 127.0.0.5 (inside allow: at most max_tcp_per_source held)
#   forged    2,000 forged responses from 127.0.0.99 (outside allow) naming a
#             third host (127.0.0.50) in the second Via, and one naming a TCP hop
#   guess     2,000 wrong-password REGISTERs from one source in 20 s: REGISTERs
#             reaching Kamailio; another phone registers at 3, 10 and 17 s
#
# The bridge's configuration is the defaults plus listen/upstream/accounts; for
# tcp and forged `[security] allow = ["127.0.0.0/26", "::1/128"]`, because the
# default allow contains all of 127.0.0.0/8 and a loopback attacker needs an
# address outside it.
#
# Needs: kamailio (+ presence, sqlite modules), kamcmd, sqlite3, python3, dumpcap
# (package tshark) and root (capture on lo). Knobs: BIN (the bridge binary;
# default target/release/blf-bridge, built first unless BUILD=0), FLOODS_DIR
# (results; default a new mktemp -d), KAM_SHM (Kamailio shared memory MB, 128).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
FLOODS=${*:-"sub5k sub20k contacts tcp forged guess"}
BIN=${BIN:-$REPO/target/release/blf-bridge}
KAM_SHM=${KAM_SHM:-128}
LIFETIME=600             # no process started here outlives this (timeout -k)
PATH="$PATH:/usr/sbin:/sbin"
ATTACK="python3 $HERE/attack.py"

DIR=${FLOODS_DIR:-$(mktemp -d /tmp/blf-floods.XXXXXX)}
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
echo "results in $DIR" >&2

need() { command -v "$1" >/dev/null || { echo "missing $1 (apt-get install -y $2)" >&2; exit 1; }; }
need kamailio "kamailio kamailio-presence-modules kamailio-sqlite-modules"
need kamcmd kamailio; need sqlite3 sqlite3; need dumpcap tshark; need python3 python3
need setsid util-linux; need timeout coreutils
[[ $(id -u) == 0 ]] || { echo "needs root (dumpcap on lo)" >&2; exit 1; }

# ----------------------------------------------------------------- processes
GROUPS_STARTED=()
start_group() {          # start_group LOG CMD...: own process group -> $BG
  local log=$1; shift
  ( exec setsid timeout -s TERM -k 5 "$LIFETIME" "$@" ) </dev/null >"$log" 2>&1 &
  BG=$!
  GROUPS_STARTED+=("$BG")
}
stop_group() {
  local g=$1 i keep=() x
  kill -TERM -- "-$g" 2>/dev/null
  for i in $(seq 50); do kill -0 -- "-$g" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$g" 2>/dev/null
  wait "$g" 2>/dev/null
  for x in "${GROUPS_STARTED[@]}"; do [[ "$x" == "$g" ]] || keep+=("$x"); done
  GROUPS_STARTED=("${keep[@]}")
}
cleanup() {
  local g
  for g in "${GROUPS_STARTED[@]}"; do stop_group "$g"; done
  GROUPS_STARTED=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM
child_of() {             # the pid of the program `timeout` runs
  local i c
  for i in $(seq 50); do
    c=$(cat "/proc/$1/task/$1/children" 2>/dev/null | awk '{print $1}')
    [[ -n "$c" ]] && { echo "$c"; return 0; }
    sleep 0.1
  done
  return 1
}

# ----------------------------------------------------------------- Kamailio
kam_start() {            # kam_start DIR -> KPORT (as bench/run.sh starts the harness)
  local dir=$1 db sql=/usr/share/kamailio/db_sqlite i
  KPORT=$($ATTACK freeport)
  db="$dir/kamailio.sqlite"
  {
    cat "$sql/standard-create.sql" "$sql/auth_db-create.sql" "$sql/presence-create.sql" "$sql/usrloc-create.sql"
    grep -vE '^\s*(#|$)' "$REPO/tests/harness/users.txt" | while read -r u p; do
      echo "INSERT INTO subscriber (username, domain, password) VALUES ('$u','pbx.test','$p');"
    done
  } | timeout 20 sqlite3 "$db" || return 1
  local args=(-f "$REPO/tests/harness/kamailio.cfg" -DD -E -Y "$dir" -w "$dir" -m "$KAM_SHM" -M 8
         -A "SIP_PORT=$KPORT" -A "SERVER_ADDR=\"sip:127.0.0.1:$KPORT\""
         -A "DBURL=\"sqlite:///$db\"" -A "CTLSOCK=\"unix:$dir/ctl\""
         -A "SUB_AUTH_DEFAULT=1" -A "SUB_AUTH_INDLG_DEFAULT=0"
         -A "DUMMY_DIALOG=1" -A "DUMMY_PRESENCE=0")
  timeout 10 kamailio "${args[@]}" -c >/dev/null 2>"$dir/kamailio-check.log" || {
    cat "$dir/kamailio-check.log" >&2; return 1; }
  start_group "$dir/kamailio.log" kamailio "${args[@]}"
  for i in $(seq 100); do
    "$BIN" health --addr "127.0.0.1:$KPORT" --timeout-ms 300 >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "kamailio did not come up; log:" >&2; tail -20 "$dir/kamailio.log" >&2
  return 1
}

# ----------------------------------------------------------------- the bridge
bridge_start() {         # bridge_start DIR [EXTRA_TOML] -> BPORT, BPID (defaults otherwise)
  local dir=$1 extra=${2:-} i hport
  BPORT=$($ATTACK freeport); hport=$($ATTACK freeport)
  cat >"$dir/bridge.toml" <<EOF
[listen]
udp = "127.0.0.1:$BPORT"
tcp = "127.0.0.1:$BPORT"

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

[http]
listen = "127.0.0.1:$hport"

[state]
dir = "$dir/state"
$extra
EOF
  "$BIN" check --config "$dir/bridge.toml" >"$dir/bridge-check.log" 2>&1 || {
    cat "$dir/bridge-check.log" >&2; return 1; }
  start_group "$dir/bridge.log" "$BIN" run --config "$dir/bridge.toml"
  BPID=$(child_of "$BG") || { echo "bridge did not start" >&2; return 1; }
  for i in $(seq 100); do
    "$BIN" health --addr "127.0.0.1:$BPORT" --timeout-ms 300 >/dev/null 2>&1 && return 0
    kill -0 "$BPID" 2>/dev/null || break
    sleep 0.1
  done
  echo "bridge did not answer; log:" >&2; tail -20 "$dir/bridge.log" >&2
  return 1
}

FOREIGN='[security]
allow = ["127.0.0.0/26", "::1/128"]'

# flood NAME [EXTRA_TOML] -- ATTACK ARGS...: fresh Kamailio + bridge, the attack, stop
flood() {
  local name=$1 extra=$2; shift 3
  local d="$DIR/$name"
  mkdir -p "$d"
  echo "== $name" >&2
  if ! kam_start "$d" || ! bridge_start "$d" "$extra"; then
    echo "BOUND $name: could not start Kamailio or the bridge ... FAIL" | tee -a "$DIR/results.txt"
    cleanup; return
  fi
  sleep 1
  $ATTACK "$@" --bridge "127.0.0.1:$BPORT" --kam-port "$KPORT" --pid "$BPID" --dir "$d" 2>"$d/attack.err" \
      | tee -a "$DIR/results.txt"
  [[ ${PIPESTATUS[0]} == 0 ]] || { echo "BOUND $name: attacker failed (see $d/attack.err) ... FAIL" | tee -a "$DIR/results.txt"; }
  kill -0 "$BPID" 2>/dev/null || echo "BOUND $name: the bridge died (see $d/bridge.log) ... FAIL" | tee -a "$DIR/results.txt"
  cleanup
  echo "bridge log: $(wc -l <"$d/bridge.log") lines, $(grep -cE ' (WARN|ERROR) ' "$d/bridge.log") WARN/ERROR" \
      | tee -a "$DIR/results.txt" >&2
}

if [[ "${BUILD:-1}" == 1 ]]; then
  (cd "$REPO" && cargo build --release --bin blf-bridge) || exit 1
fi
[[ -x "$BIN" ]] || { echo "no $BIN" >&2; exit 1; }
{
  echo "date: $(date -Is)"
  echo "bridge: $("$BIN" --version 2>/dev/null) $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)$(git -C "$REPO" diff --quiet HEAD 2>/dev/null || echo '+changes')"
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "kamailio: $(kamailio -v 2>/dev/null | head -1)"
} | tee "$DIR/results.txt" >&2

for f in $FLOODS; do
  case $f in
    sub5k)    flood sub5k "" -- subscribe --count 5000 --seconds 25 --after 30 --max-total 3000 ;;
    sub20k)   flood sub20k "" -- subscribe --count 20000 --seconds 50 --after 30 ;;
    contacts) flood contacts "" -- contacts --count 1500 --contacts 700 --seconds 15 --sources 1
              flood contacts50 "" -- contacts --count 1500 --contacts 700 --seconds 15 --sources 50 ;;
    tcp)      flood tcp "$FOREIGN" -- tcp --count 1000 --size 65536 --src 127.0.0.99 --phone-src 127.0.0.2
              # the same from inside allow: max_tcp_per_source (32) holds
              flood tcp-allowed "$FOREIGN" -- tcp --count 1000 --size 65536 --src 127.0.0.5 --phone-src 127.0.0.2 --max-held 32 ;;
    forged)   flood forged "$FOREIGN" -- forged --count 2000 --seconds 2 --src 127.0.0.99 --third 127.0.0.50 ;;
    guess)    flood guess "" -- guess --count 2000 --seconds 20 --src 127.0.0.8 ;;
    *) echo "unknown flood $f" >&2; exit 2 ;;
  esac
done

echo >&2
echo "== summary ($DIR/results.txt)" >&2
grep '^BOUND' "$DIR/results.txt"
fails=$(grep -c '^BOUND.*FAIL$' "$DIR/results.txt")
echo "$(grep -c '^BOUND' "$DIR/results.txt") bounds, $fails FAIL"
[[ "$fails" == 0 ]]
