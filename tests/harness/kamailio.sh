#!/bin/bash
# Run the harness PBX by hand, in the foreground (Ctrl-C stops it), the same way
# tests/common/mod.rs (Kamailio::start) does:
#
#   tests/harness/kamailio.sh [PORT [RUN_DIR]]      defaults: 5070, a new mktemp dir
#
# Knobs (environment): SUB_AUTH=0|1|2 (default 1 = 407), SUB_AUTH_INDLG=0|1,
# DUMMY_DIALOG=0|1 (default 1), DUMMY_PRESENCE=0|1 (default 0), NO_QOP=1, NO_MWI=1.
# Then e.g.:
#   kamcmd -s unix:RUN_DIR/ctl ul.lookup location s:1002
#   kamcmd -s unix:RUN_DIR/ctl htable.dump watchers
#   sipp 127.0.0.1:PORT -sf tests/harness/scenarios/register.xml -s 1002 -au 1002 -ap pass1002 ...
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PORT="${1:-5070}"
RUN="${2:-$(mktemp -d /tmp/blf-kamailio.XXXXXX)}"
mkdir -p "$RUN"
RUN="$(cd "$RUN" && pwd)"
DB="$RUN/kamailio.sqlite"
SQL=/usr/share/kamailio/db_sqlite
PATH="$PATH:/usr/sbin"

rm -f "$DB" "$DB-journal" "$RUN/ctl"
{
  cat "$SQL/standard-create.sql" "$SQL/auth_db-create.sql" "$SQL/presence-create.sql" "$SQL/usrloc-create.sql"
  grep -vE '^\s*(#|$)' "$HERE/users.txt" | while read -r u p; do
    echo "INSERT INTO subscriber (username, domain, password) VALUES ('$u','pbx.test','$p');"
  done
} | sqlite3 "$DB"

ARGS=(-f "$HERE/kamailio.cfg" -DD -E -Y "$RUN" -w "$RUN" -m 32 -M 8
      -A "SIP_PORT=$PORT"
      -A "SERVER_ADDR=\"sip:127.0.0.1:$PORT\""
      -A "DBURL=\"sqlite:///$DB\""
      -A "CTLSOCK=\"unix:$RUN/ctl\""
      -A "SUB_AUTH_DEFAULT=${SUB_AUTH:-1}"
      -A "SUB_AUTH_INDLG_DEFAULT=${SUB_AUTH_INDLG:-0}"
      -A "DUMMY_DIALOG=${DUMMY_DIALOG:-1}"
      -A "DUMMY_PRESENCE=${DUMMY_PRESENCE:-0}")
[[ "${NO_QOP:-0}" == 1 ]] && ARGS+=(-A NO_QOP)
[[ "${NO_MWI:-0}" == 1 ]] && ARGS+=(-A NO_MWI)

kamailio "${ARGS[@]}" -c >/dev/null 2>"$RUN/check.log" || { cat "$RUN/check.log" >&2; exit 1; }
echo "kamailio on udp/tcp 127.0.0.1:$PORT, run dir $RUN (ctl unix:$RUN/ctl)" >&2
exec kamailio "${ARGS[@]}"
