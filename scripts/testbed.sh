#!/usr/bin/env bash
# xvs testbed: network namespaces for client(s), a director, backends and a router.
#
#   scripts/testbed.sh up   [PREFIX]     build it (PREFIX default "xvs"; keep it ≤ 6 characters)
#   scripts/testbed.sh down [PREFIX]     remove everything `up` made (namespaces, veths, processes)
#   scripts/testbed.sh info [PREFIX]     print names, addresses and MACs
#
# Environment: CLIENTS (1), BACKENDS (3), QUEUES (2: rx/tx queues of every veth),
# SERVERS (1: start HTTP :80 / UDP :5000 servers naming the backend, and the IPIP decap helper),
# DIRECTORS (1: more make a pair or a cluster; director i > 1 is namespace PREFIX-dir<i> with
# front 198.18.1.<1+i>, back 198.18.3.<1+i> and FullNAT local .<99+i>; the router and the
# backends point at director 1 until a test moves them).
#
#   client LAN  198.18.1.0/24  2001:2:0:1::/64   bridge "brc" in the router namespace
#     router .1   director "front" .2   clients .10, .11, ...
#   backend LAN 198.18.3.0/24  2001:2:0:3::/64   bridge "brb" in the router namespace
#     router .1   director "back" .2   backends .11, .12, .13   FullNAT local address .100
#   VIPs 198.18.10.1-4 / 2001:2:0:10::1-4 (the router routes 198.18.10.0/24 and 2001:2:0:10::/64
#     to the director's front address)
#
# The director namespace owns the VIPs (on lo) and the FullNAT local addresses (on back), so its
# kernel answers ARP/ND and ping for them; xvs's XDP program steals the TCP/UDP traffic (AF_XDP).
# IPv4/IPv6 forwarding is off there, and an nftables input rule drops TCP/UDP/SCTP to VIPs and
# local addresses, so with `--io packet` (where the kernel sees every frame) it never answers them
# itself (RST / port unreachable). xvs runs there on interfaces "front" (port 0) and "back" (port 1).
# Backends own the VIPs on lo (arp_ignore=1, arp_announce=2), reply to NAT traffic via the
# director (default route) and to DR/TUN traffic (source = VIP) via the router (policy rule).
# Endpoints (clients, backends) have tx checksum offload, TSO/GSO and GRO off: AF_XDP and
# AF_PACKET forward raw bytes, and a partial checksum would arrive broken (TESTBED.md).
set -euo pipefail

cmd=${1:-}
P=${2:-xvs}
CLIENTS=${CLIENTS:-1}
BACKENDS=${BACKENDS:-3}
QUEUES=${QUEUES:-2}
SERVERS=${SERVERS:-1}
HERE=$(cd "$(dirname "$0")" && pwd)

DIRECTORS=${DIRECTORS:-1}
RT=$P-rt
DIR=$P-dir
clients() { for i in $(seq 1 "$CLIENTS"); do echo "$P-c$i"; done; }
backends() { for i in $(seq 1 "$BACKENDS"); do echo "$P-b$i"; done; }
directors() { echo "$DIR"; for i in $(seq 2 "$DIRECTORS"); do echo "$P-dir$i"; done; }
# Namespaces of every director a testbed of this prefix may hold (for `down`).
all_directors() { echo "$DIR"; for i in $(seq 2 9); do echo "$P-dir$i"; done; }
# ... and every client and backend (a testbed built with more than this call's CLIENTS/BACKENDS).
all_clients() { for i in $(seq 1 9); do echo "$P-c$i"; done; }
all_backends() { for i in $(seq 1 9); do echo "$P-b$i"; done; }
all_ns() { echo "$RT $(directors) $(clients) $(backends)"; }
down_ns() { echo "$RT $(all_directors) $(all_clients) $(all_backends)"; }

# All VIPs: one per method in the integration tests (.1 .. .4, ::1 .. ::4).
VIPS4="198.18.10.1 198.18.10.2 198.18.10.3 198.18.10.4"
VIPS6="2001:2:0:10::1 2001:2:0:10::2 2001:2:0:10::3 2001:2:0:10::4"
LIP4=198.18.3.100
LIP6=2001:2:0:3::100

die() { echo "testbed: $*" >&2; exit 1; }
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
sysctl_ns() { nsx "$1" sysctl -qw "$2" >/dev/null; }

# veth NS IFNAME PORT BRIDGE: IFNAME in NS, PORT in the router namespace, enslaved to BRIDGE.
veth() {
  local ns=$1 ifn=$2 port=$3 br=$4
  ip -n "$ns" link add "$ifn" numtxqueues "$QUEUES" numrxqueues "$QUEUES" type veth \
    peer name "$port" netns "$RT" numtxqueues "$QUEUES" numrxqueues "$QUEUES"
  ip -n "$RT" link set "$port" master "$br" up
  ip -n "$ns" link set "$ifn" up
}

endpoint_offloads_off() {
  nsx "$1" ethtool -K "$2" tx off tso off gso off gro off >/dev/null 2>&1 ||
    nsx "$1" ethtool -K "$2" tx off >/dev/null
}

base_ns() {
  local ns=$1
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  sysctl_ns "$ns" net.ipv6.conf.all.accept_dad=0
  sysctl_ns "$ns" net.ipv6.conf.default.accept_dad=0
  sysctl_ns "$ns" net.ipv4.conf.all.rp_filter=0
  sysctl_ns "$ns" net.ipv4.conf.default.rp_filter=0
}

start_servers() {
  local ns=$1 name=$2
  # shellcheck disable=SC2086
  nsx "$ns" python3 -u - "$name" $VIPS4 $VIPS6 >/dev/null 2>&1 <<'EOF' &
import socket, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
name = sys.argv[1]
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        body = (name + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    request_queue_size = 1024
def udp(fam, addr):
    # Sockets bound to the VIPs answer DR/TUN traffic from the VIP (a wildcard socket would
    # answer from the backend's own address); the wildcard one answers NAT/FullNAT traffic.
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 5000))
    while True:
        d, a = s.recvfrom(65535)
        s.sendto(name.encode() + b" " + d, a)
for addr in ["::"] + sys.argv[2:]:
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    threading.Thread(target=udp, args=(fam, addr), daemon=True).start()
S(("::", 80), H).serve_forever()
EOF
  nsx "$ns" python3 "$HERE/decap-helper" >/dev/null 2>&1 &
}

# director NS N: the director namespace of director N (1-based).
director() {
  local ns=$1 n=$2 lip4 lip6 suffix=""
  [ "$n" -gt 1 ] && suffix=$n
  veth "$ns" front "df$suffix" brc
  veth "$ns" back "db$suffix" brb
  ip -n "$ns" addr add "198.18.1.$((1 + n))/24" dev front
  ip -n "$ns" addr add "2001:2:0:1::$((1 + n))/64" dev front nodad
  ip -n "$ns" addr add "198.18.3.$((1 + n))/24" dev back
  ip -n "$ns" addr add "2001:2:0:3::$((1 + n))/64" dev back nodad
  if [ "$n" -eq 1 ]; then
    lip4=$LIP4 lip6=$LIP6
  else
    lip4=198.18.3.$((99 + n)) lip6=2001:2:0:3::$((99 + n))
  fi
  ip -n "$ns" addr add "$lip4/24" dev back
  # Deprecated (preferred_lft 0), so the director's own traffic never picks it as source.
  ip -n "$ns" addr add "$lip6/64" dev back nodad preferred_lft 0
  for v in $VIPS4; do ip -n "$ns" addr add "$v/32" dev lo; done
  for v in $VIPS6; do ip -n "$ns" addr add "$v/128" dev lo; done
  ip -n "$ns" route add default via 198.18.1.1
  ip -n "$ns" -6 route add default via 2001:2:0:1::1
  sysctl_ns "$ns" net.ipv4.ip_forward=0
  sysctl_ns "$ns" net.ipv6.conf.all.forwarding=0
  if command -v nft >/dev/null; then
    nsx "$ns" nft -f - <<EOF
table inet xvs_testbed {
  chain input {
    type filter hook input priority -300; policy accept;
    ip daddr { 198.18.10.0/24, $lip4 } meta l4proto { tcp, udp, sctp } drop
    ip6 daddr { 2001:2:0:10::/64, $lip6 } meta l4proto { tcp, udp, sctp } drop
  }
}
EOF
  else
    echo "testbed: nft missing: with --io packet the director's kernel will answer VIP traffic (scripts/install-deps.sh)" >&2
  fi
}

up() {
  command -v ip >/dev/null || die "iproute2 missing (scripts/install-deps.sh)"
  command -v ethtool >/dev/null || die "ethtool missing (scripts/install-deps.sh)"
  [ "$(id -u)" -eq 0 ] || die "needs root"
  ip netns list | grep -q "^$DIR\b" && die "testbed $P exists (scripts/testbed.sh down $P)"
  for ns in $(all_ns); do base_ns "$ns"; done

  # Router: two bridges, forwarding on, routes to the VIP networks via the director. No ICMP
  # redirects: the router forwards VIP traffic back out of the client LAN, and a client that
  # took a redirect would keep sending to one director after a test moves the VIP route.
  sysctl_ns "$RT" net.ipv4.conf.all.send_redirects=0
  sysctl_ns "$RT" net.ipv4.conf.default.send_redirects=0
  for br in brc brb; do
    ip -n "$RT" link add "$br" type bridge forward_delay 0 stp_state 0
    ip -n "$RT" link set "$br" up
  done
  ip -n "$RT" addr add 198.18.1.1/24 dev brc
  ip -n "$RT" addr add 2001:2:0:1::1/64 dev brc nodad
  ip -n "$RT" addr add 198.18.3.1/24 dev brb
  ip -n "$RT" addr add 2001:2:0:3::1/64 dev brb nodad
  sysctl_ns "$RT" net.ipv4.ip_forward=1
  sysctl_ns "$RT" net.ipv6.conf.all.forwarding=1

  # Directors.
  local d=0
  for ns in $(directors); do
    d=$((d + 1))
    director "$ns" "$d"
  done

  ip -n "$RT" route add 198.18.10.0/24 via 198.18.1.2
  ip -n "$RT" -6 route add 2001:2:0:10::/64 via 2001:2:0:1::2

  # Clients.
  local i=0
  for ns in $(clients); do
    i=$((i + 1))
    veth "$ns" eth0 "c$i" brc
    ip -n "$ns" addr add "198.18.1.$((9 + i))/24" dev eth0
    ip -n "$ns" addr add "2001:2:0:1::$((9 + i))/64" dev eth0 nodad
    ip -n "$ns" route add default via 198.18.1.1
    ip -n "$ns" -6 route add default via 2001:2:0:1::1
    endpoint_offloads_off "$ns" eth0
  done

  # Backends.
  i=0
  for ns in $(backends); do
    i=$((i + 1))
    veth "$ns" eth0 "b$i" brb
    ip -n "$ns" addr add "198.18.3.$((10 + i))/24" dev eth0
    ip -n "$ns" addr add "2001:2:0:3::$((10 + i))/64" dev eth0 nodad
    for v in $VIPS4; do ip -n "$ns" addr add "$v/32" dev lo; done
    for v in $VIPS6; do ip -n "$ns" addr add "$v/128" dev lo; done
    for k in all eth0; do
      sysctl_ns "$ns" "net.ipv4.conf.$k.arp_ignore=1"
      sysctl_ns "$ns" "net.ipv4.conf.$k.arp_announce=2"
    done
    # NAT replies (source = own address) via the director; DR/TUN replies (source = VIP) via the router.
    ip -n "$ns" route add default via 198.18.3.2
    ip -n "$ns" -6 route add default via 2001:2:0:3::2
    ip -n "$ns" rule add from 198.18.10.0/24 table 100
    ip -n "$ns" route add default via 198.18.3.1 table 100
    ip -n "$ns" -6 rule add from 2001:2:0:10::/64 table 100
    ip -n "$ns" -6 route add default via 2001:2:0:3::1 table 100
    endpoint_offloads_off "$ns" eth0
    [ "$SERVERS" = 1 ] && start_servers "$ns" "b$i"
  done
  if [ "$SERVERS" = 1 ]; then
    # Wait (bounded) until every backend's HTTP server listens.
    for ns in $(backends); do
      for _ in $(seq 1 50); do
        nsx "$ns" bash -c 'exec 3<>/dev/tcp/127.0.0.1/80' 2>/dev/null && break
        sleep 0.1
      done
    done
  fi
  info
}

info() {
  echo "testbed $P: namespaces" $(all_ns)
  echo "  director $DIR: front $(cat_mac "$DIR" front) 198.18.1.2 2001:2:0:1::2; back $(cat_mac "$DIR" back) 198.18.3.2 2001:2:0:3::2"
  echo "  VIPs $VIPS4 $VIPS6; FullNAT local $LIP4 $LIP6; router 198.18.1.1 / 198.18.3.1"
  local i=0
  for ns in $(backends); do
    i=$((i + 1))
    echo "  backend $ns: 198.18.3.$((10 + i)) 2001:2:0:3::$((10 + i)) $(cat_mac "$ns" eth0)"
  done
  i=0
  for ns in $(clients); do
    i=$((i + 1))
    echo "  client $ns: 198.18.1.$((9 + i)) 2001:2:0:1::$((9 + i))"
  done
}

cat_mac() { ip -n "$1" -o link show "$2" 2>/dev/null | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p'; }

down() {
  local ns pids
  for ns in $(down_ns); do
    ip netns list | grep -q "^$ns\b" || continue
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -n "$pids" ] && kill $pids 2>/dev/null || true
  done
  sleep 0.2
  for ns in $(down_ns); do
    ip netns list | grep -q "^$ns\b" || continue
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
}

case "$cmd" in
  up) up ;;
  down) down ;;
  info) info ;;
  *) echo "usage: $0 up|down|info [PREFIX]" >&2; exit 2 ;;
esac
