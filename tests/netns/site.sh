#!/usr/bin/env bash
# A customer site in network namespaces, for the end-to-end tests (issue 11).
#
#   tests/netns/site.sh up NAME     build it (tears down what it built on failure)
#   tests/netns/site.sh down NAME   remove it (idempotent; never fails)
#   tests/netns/site.sh check       exit 0 when namespaces, veths and iptables work here
#
# Three namespaces, documentation addresses only (RFC 5737):
#
#   NAME-lan  eth0 192.0.2.2/24 (the bridge), 192.0.2.10-19/24 (phones)
#             default route via 192.0.2.1
#   NAME-rtr  lan0 192.0.2.1/24, wan0 203.0.113.1/24: the customer's NAT router.
#             MASQUERADE out of wan0; from wan0 only replies (ESTABLISHED,RELATED)
#             are forwarded to the LAN, like a home router. Short conntrack timeouts
#             (per network namespace): UDP 30 s (and 30 s "stream", i.e. after a
#             reply too), TCP established $SITE_TCP_TIMEOUT (default 30 s: an idle
#             connection is forgotten like a UDP binding: what the provider sends on it
#             is not forwarded any more).
#   NAME-wan  eth0 203.0.113.20/24 and .21 (providers' SIP servers), .53 (a DNS
#             server, started by the tests that need one), .30 (a phone elsewhere on
#             the internet, registered directly at the provider). No route to 192.0.2.0/24:
#             the internet reaches the site only through the router's address.
#
# Everything is created inside the namespaces (no interface in the caller's
# namespace), so parallel sites with different NAMEs never collide.
set -uo pipefail

PHONES_FIRST=10
PHONES_LAST=19
UDP_TIMEOUT="${SITE_UDP_TIMEOUT:-30}"
TCP_TIMEOUT="${SITE_TCP_TIMEOUT:-30}"

die() { echo "site.sh: $*" >&2; exit 1; }

down() {
  local name=$1 ns
  for ns in "$name-lan" "$name-rtr" "$name-wan"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
    ip netns del "$ns" 2>/dev/null
  done
  return 0
}

run() { "$@" || die "failed: $*"; }

up() {
  local name=$1 lan="$1-lan" rtr="$1-rtr" wan="$1-wan" ns i
  command -v iptables >/dev/null || die "iptables not installed (apt-get install iptables)"
  for ns in "$lan" "$rtr" "$wan"; do
    run ip netns add "$ns"
    run ip -n "$ns" link set lo up
  done
  run ip -n "$rtr" link add lan0 type veth peer name eth0 netns "$lan"
  run ip -n "$rtr" link add wan0 type veth peer name eth0 netns "$wan"

  run ip -n "$lan" addr add 192.0.2.2/24 dev eth0
  for ((i = PHONES_FIRST; i <= PHONES_LAST; i++)); do
    run ip -n "$lan" addr add "192.0.2.$i/24" dev eth0
  done
  run ip -n "$rtr" addr add 192.0.2.1/24 dev lan0
  run ip -n "$rtr" addr add 203.0.113.1/24 dev wan0
  for i in 20 21 30 53; do
    run ip -n "$wan" addr add "203.0.113.$i/24" dev eth0
  done
  for ns in "$lan" "$wan"; do
    run ip -n "$ns" link set eth0 up
  done
  run ip -n "$rtr" link set lan0 up
  run ip -n "$rtr" link set wan0 up
  run ip -n "$lan" route add default via 192.0.2.1

  run ip netns exec "$rtr" sysctl -qw net.ipv4.ip_forward=1
  # conntrack's timeouts are per network namespace (checked by `check`)
  run ip netns exec "$rtr" sysctl -qw net.netfilter.nf_conntrack_udp_timeout="$UDP_TIMEOUT"
  run ip netns exec "$rtr" sysctl -qw net.netfilter.nf_conntrack_udp_timeout_stream="$UDP_TIMEOUT"
  run ip netns exec "$rtr" sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_established="$TCP_TIMEOUT"
  run ip netns exec "$rtr" iptables -t nat -A POSTROUTING -o wan0 -j MASQUERADE
  run ip netns exec "$rtr" iptables -P FORWARD DROP
  run ip netns exec "$rtr" iptables -A FORWARD -i lan0 -o wan0 -j ACCEPT
  run ip netns exec "$rtr" iptables -A FORWARD -i wan0 -o lan0 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
  # the addresses are usable at once (no IPv6 DAD involved; ARP on first use)
  return 0
}

check() {
  local probe="blfcheck$$"
  [[ $(id -u) -eq 0 ]] || die "not root"
  command -v ip >/dev/null || die "ip (iproute2) not installed"
  command -v iptables >/dev/null || die "iptables not installed"
  ip netns add "$probe" 2>/dev/null || die "cannot create a network namespace (ip netns add)"
  local ok=0
  if ip -n "$probe" link add a0 type veth peer name b0 >/dev/null 2>&1 &&
    ip netns exec "$probe" iptables -t nat -L -n >/dev/null 2>&1 &&
    ip netns exec "$probe" sysctl -qw net.netfilter.nf_conntrack_udp_timeout=29 >/dev/null 2>&1; then
    # per-namespace: the caller's own value must not have changed
    [[ $(sysctl -n net.netfilter.nf_conntrack_udp_timeout 2>/dev/null) != 29 ]] || ok=2
  else
    ok=1
  fi
  ip netns del "$probe" 2>/dev/null
  case $ok in
    0) return 0 ;;
    1) die "veth / iptables / conntrack sysctls do not work in a network namespace here" ;;
    *) die "conntrack timeouts are not per network namespace on this kernel" ;;
  esac
}

case "${1:-}" in
  up)
    [[ -n "${2:-}" ]] || die "usage: site.sh up NAME"
    down "$2"
    if ! (up "$2"); then
      down "$2"
      exit 1
    fi
    ;;
  down)
    [[ -n "${2:-}" ]] || die "usage: site.sh down NAME"
    down "$2"
    ;;
  check) check ;;
  *) die "usage: site.sh up|down NAME | check" ;;
esac
