#!/usr/bin/env bash
# An ECMP cluster of xvs directors to explore (and the topology of tests/ecmp_cluster.rs): the
# namespace testbed (scripts/testbed.sh) with several directors, BIRD 2 on the router with
# kernel ECMP (`merge paths on`, fib_multipath_hash_policy=1: L4 hash), and on each director
# `xvs run` (DR, scheduler mh with the port in the hash, sloppy_tcp, both sync daemons, TCP health
# checks, [announce] device) plus BIRD announcing the VIP over BGP (BFD 100 ms x 3) while xvs
# says it has an available backend. Configs: examples/bird/ (the same settings), written per
# node into RUN.
#
#   scripts/cluster.sh up    [PREFIX]    build it, start everything, wait for BGP Established
#   scripts/cluster.sh start PREFIX N    start xvs and bird on director N (whichever is not running)
#   scripts/cluster.sh stop  PREFIX N    SIGKILL xvs and bird of director N (a dead node)
#   scripts/cluster.sh isolate PREFIX N  take director N's router-side ports down (a node that
#                                        vanished without a word: BFD notices), then `stop` it
#   scripts/cluster.sh status [PREFIX]   BGP sessions, the router's VIP route, announced VIPs
#   scripts/cluster.sh down  [PREFIX]    stop everything and remove the testbed
#
# Environment: DIRECTORS (3) started by `up`; SYNC (1: every director runs both sync daemons;
# 0: none, the directors agree through mh and sloppy_tcp alone); SLOPPY (1: sloppy_tcp on; 0:
# a director drops the middle of a flow it has no entry for, as IPVS does by default); SPARE (0) more director namespaces built but not
# started (start them later with `start`); PORT (80: the testbed's HTTP servers naming the
# backend; another port needs SERVERS=0 and your own servers); SERVERS (1); BACKENDS (3:
# backend namespaces); SERVICE_BACKENDS (BACKENDS: how many of them the service starts with);
# XVS (the xvs binary; default target/release/xvs, built if missing); RUN
# (/tmp/xvs-cluster-PREFIX: configs, logs, pid files, control sockets).
#
# Try: ip netns exec xvs-c1 curl -s 198.18.10.1   (a backend's name; new connections spread)
#      scripts/cluster.sh stop xvs 2; scripts/cluster.sh status xvs   (two next hops left)
set -euo pipefail

cmd=${1:-}
P=${2:-xvs}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
DIRECTORS=${DIRECTORS:-3}
SPARE=${SPARE:-0}
PORT=${PORT:-80}
BACKENDS=${BACKENDS:-3}
SERVICE_BACKENDS=${SERVICE_BACKENDS:-$BACKENDS}
RUN=${RUN:-/tmp/xvs-cluster-$P}
SYNC=${SYNC:-1}
SLOPPY=${SLOPPY:-1}
VIP=198.18.10.1
ALL=$((DIRECTORS + SPARE))

die() { echo "cluster: $*" >&2; exit 1; }
dns() { if [ "$1" -eq 1 ]; then echo "$P-dir"; else echo "$P-dir$1"; fi; }

xvs_bin() {
  if [ -n "${XVS:-}" ]; then echo "$XVS"; return; fi
  [ -x "$ROOT/target/release/xvs" ] || (cd "$ROOT" && cargo build --release --bin xvs >&2)
  echo "$ROOT/target/release/xvs"
}

router_conf() {
  cat <<EOF
# Written by scripts/cluster.sh from examples/bird/router.conf.
router id 198.18.1.1;
log "$RUN/bird-rt.log" all;
protocol device { scan time 10; }
protocol kernel {
  merge paths on;
  ipv4 { import none; export where source = RTS_BGP; };
}
protocol bfd {
  interface "brc" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; };
}
template bgp director {
  local 198.18.1.1 as 65000;
  hold time 3;
  keepalive time 1;
  connect retry time 1;
  error wait time 1, 5;
  bfd on;
  ipv4 { import where net ~ [ 198.18.10.0/24{32,32} ]; export none; };
}
EOF
  for n in $(seq 1 "$ALL"); do
    echo "protocol bgp dir$n from director { neighbor 198.18.1.$((1 + n)) as 65001; }"
  done
}

director_bird_conf() {
  local n=$1 front=198.18.1.$((1 + $1))
  cat <<EOF
# Written by scripts/cluster.sh from examples/bird/director.conf.
router id $front;
log "$RUN/bird$n.log" all;
protocol device { scan time 10; }
protocol direct vips { ipv4; interface "xvs-vips"; }
protocol bfd {
  interface "front" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; };
}
protocol bgp uplink {
  local $front as 65001;
  neighbor 198.18.1.1 as 65000;
  hold time 3;
  keepalive time 1;
  connect retry time 1;
  error wait time 1, 5;
  connect delay time 1;
  bfd on;
  ipv4 { import none; export where proto = "vips"; };
}
EOF
}

xvs_conf() {
  local n=$1 b
  cat <<EOF
# Written by scripts/cluster.sh: director $n of the ECMP cluster.
log_interval_secs = 0
neighbour_refresh_ms = 200

[director]
# A flow ECMP moves here mid-stream is scheduled (mh: the same backend as on every director).
sloppy_tcp = $([ "$SLOPPY" = 1 ] && echo true || echo false)

[announce]
interface = "xvs-vips"

[[worker]]
queue = 0

[[interface]]
name = "front"
ipv4 = "198.18.1.$((1 + n))"

[[interface]]
name = "back"
ipv4 = "198.18.3.$((1 + n))"

[[route]]
dst = "0.0.0.0/0"
via = "198.18.1.1"
interface = "front"

[[route]]
dst = "198.18.3.0/24"
interface = "back"

[[service]]
protocol = "tcp"
vip = "$VIP"
port = $PORT
scheduler = "mh"
flags = "mh-port"

[service.check]
type = "tcp"
interval_ms = 200
timeout_ms = 200
rise = 1
fall = 2
EOF
  for b in $(seq 1 "$SERVICE_BACKENDS"); do
    printf '\n[[service.backend]]\naddress = "198.18.3.%d"\nport = %d\nmethod = "dr"\n' $((10 + b)) "$PORT"
  done
  [ "$SYNC" = 1 ] || return 0
  cat <<EOF

# Every director sends its connections and installs the others' (multicast on the backend LAN).
[sync.master]
interface = "back"
syncid = 7

[sync.backup]
interface = "back"
syncid = 7
EOF
}

birdc_in() { local ns=$1 sock=$2; shift 2; ip netns exec "$ns" birdc -s "$sock" "$@"; }

# established NS SOCKET PROTOCOL: the BGP session is up.
established() { birdc_in "$1" "$2" show protocols "$3" 2>/dev/null | grep -q Established; }

# alive PIDFILE: the process it names runs.
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_director() {
  local n=$1 ns xvs p
  ns=$(dns "$n")
  ip netns list | grep -q "^$ns\b" || die "no namespace $ns (DIRECTORS/SPARE of up)"
  xvs=$(xvs_bin)
  for p in $(ports "$n"); do ip -n "$P-rt" link set "$p" up; done
  if ! alive "$RUN/x$n.pid"; then
    xvs_conf "$n" >"$RUN/x$n.toml"
    rm -f "$RUN/x$n.sock"
    ip netns exec "$ns" "$xvs" run --config "$RUN/x$n.toml" --socket "$RUN/x$n.sock" \
      >>"$RUN/x$n.log" 2>&1 &
    echo $! >"$RUN/x$n.pid"
  fi
  if ! alive "$RUN/bird$n.pid"; then
    director_bird_conf "$n" >"$RUN/bird$n.conf"
    rm -f "$RUN/bird$n.ctl"
    ip netns exec "$ns" bird -f -c "$RUN/bird$n.conf" -s "$RUN/bird$n.ctl" \
      -P "$RUN/bird$n.pidfile" >>"$RUN/bird$n.out" 2>&1 &
    echo $! >"$RUN/bird$n.pid"
  fi
  echo "director $n: xvs pid $(cat "$RUN/x$n.pid"), bird pid $(cat "$RUN/bird$n.pid")"
}

# ports N: director N's ports on the router's bridges.
ports() { if [ "$1" -eq 1 ]; then echo "df db"; else echo "df$1 db$1"; fi; }

isolate() {
  local p
  for p in $(ports "$1"); do ip -n "$P-rt" link set "$p" down; done
}

stop_director() {
  local n=$1 f
  for f in "$RUN/x$n.pid" "$RUN/bird$n.pid"; do
    [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
}

# wait_established N...: every listed director's session Established on the router (≤ 30 s).
wait_established() {
  local n ok
  for _ in $(seq 1 300); do
    ok=1
    for n in "$@"; do established "$P-rt" "$RUN/bird-rt.ctl" "dir$n" || ok=0; done
    [ $ok = 1 ] && return 0
    sleep 0.1
  done
  return 1
}

up() {
  command -v bird >/dev/null || die "bird missing (scripts/install-deps.sh)"
  [ "$ALL" -le 9 ] || die "at most 9 directors"
  DIRECTORS=$ALL BACKENDS=$BACKENDS SERVERS=${SERVERS:-1} QUEUES=1 "$HERE/testbed.sh" up "$P" >/dev/null
  mkdir -p "$RUN"
  # The router learns the VIP from the directors only; the testbed's static route goes.
  ip -n "$P-rt" route del 198.18.10.0/24 || true
  ip netns exec "$P-rt" sysctl -qw net.ipv4.fib_multipath_hash_policy=1
  router_conf >"$RUN/bird-rt.conf"
  ip netns exec "$P-rt" bird -f -c "$RUN/bird-rt.conf" -s "$RUN/bird-rt.ctl" \
    -P "$RUN/bird-rt.pidfile" >>"$RUN/bird-rt.out" 2>&1 &
  echo $! >"$RUN/bird-rt.pid"
  for n in $(seq 1 "$DIRECTORS"); do start_director "$n"; done
  if wait_established $(seq 1 "$DIRECTORS"); then
    echo "cluster $P: $DIRECTORS director(s) Established"
  else
    echo "cluster $P: not every BGP session is Established after 30 s:" >&2
    status
    exit 1
  fi
  for _ in $(seq 1 50); do
    [ "$(ip -n "$P-rt" route show "$VIP" | grep -c 'nexthop via')" -ge "$DIRECTORS" ] && break
    sleep 0.1
  done
  status
}

status() {
  echo "== router BGP sessions"
  birdc_in "$P-rt" "$RUN/bird-rt.ctl" show protocols 2>&1 | grep -E "^dir|Name" || true
  echo "== router route to $VIP"
  ip -n "$P-rt" route show "$VIP" || true
  for n in $(seq 1 9); do
    local ns
    ns=$(dns "$n")
    ip netns list | grep -q "^$ns\b" || continue
    echo "== director $n ($ns): announced: $(ip -n "$ns" -o -4 addr show dev xvs-vips 2>/dev/null | awk '{print $4}' | tr '\n' ' ')"
  done
}

down() {
  local f
  for f in "$RUN"/*.pid; do
    [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null || true
  done
  "$HERE/testbed.sh" down "$P"
  rm -rf "$RUN"
}

case "$cmd" in
  up) up ;;
  start) start_director "${3:?director number}"; wait_established "$3" || die "director $3 not Established after 30 s" ;;
  stop) stop_director "${3:?director number}" ;;
  isolate) isolate "${3:?director number}" ;;
  status) status ;;
  down) down ;;
  *) echo "usage: $0 up|down|status [PREFIX] | start|stop|isolate PREFIX N" >&2; exit 2 ;;
esac
