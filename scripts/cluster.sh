#!/usr/bin/env bash
# Several xvs directors to explore, in the namespace testbed (scripts/testbed.sh): an ECMP
# cluster (the topology of tests/ecmp_cluster.rs) or a keepalived pair (tests/keepalived_pair.rs).
#
# TOPOLOGY=ecmp (default): BIRD 2 on the router with kernel ECMP (`merge paths on`,
# fib_multipath_hash_policy=1: L4 hash), and on each director `xvs run` (DR, scheduler mh with
# the port in the hash, sloppy_tcp, both sync daemons, TCP health checks, [announce] device) plus
# BIRD announcing the VIP over BGP (BFD 100 ms x 3) while xvs says it has an available backend,
# and examples/bird/xvs-watchdog.sh (a wedged xvs: its announce device goes down).
# Configs: examples/bird/ (the same settings), written per node into RUN.
# TOPOLOGY=pair: two directors running `xvs run` (NAT, rr, both sync daemons, TCP health checks)
# and keepalived (VRRP only) with examples/keepalived/keepalived.conf (interfaces, paths and
# priority adapted); the router routes the VIPs via the floating 198.18.1.254, the backends'
# gateway is the floating 198.18.3.254.
#
#   scripts/cluster.sh up    [PREFIX]    build it, start everything, wait until it is really up
#                                        (ecmp: BGP Established; pair: a VRRP MASTER)
#   scripts/cluster.sh start PREFIX N    start xvs and bird/keepalived on director N (whichever
#                                        is not running)
#   scripts/cluster.sh stop  PREFIX N    SIGKILL xvs and bird/keepalived of director N (a dead node)
#   scripts/cluster.sh isolate PREFIX N  take director N's router-side ports down (a node that
#                                        vanished without a word: BFD notices), then `stop` it
#   scripts/cluster.sh status [PREFIX]   ecmp: BGP sessions, the router's VIP route, announced
#                                        VIPs; pair: VRRP states, who holds the floating addresses
#   scripts/cluster.sh down  [PREFIX]    stop everything and remove the testbed
#
# Environment (read by `up`; later commands use the topology `up` recorded): TOPOLOGY (ecmp);
# DIRECTORS (ecmp 3, pair 2) started by `up`; SPARE (0) more director namespaces built but not
# started (start them later with `start`); SYNC (1: every director runs both sync daemons; 0:
# none, the ECMP directors then agree through mh and sloppy_tcp alone); SLOPPY (1: sloppy_tcp on;
# 0: a director drops the middle of a flow it has no entry for, as IPVS does by default); PORT
# (80: the testbed's HTTP servers naming the backend; another port needs SERVERS=0 and your own
# servers); SERVERS (1); BACKENDS (3: backend namespaces); SERVICE_BACKENDS (BACKENDS: how many
# of them the service starts with); XVS (the xvs binary; default target/release/xvs, built if
# missing); RUN (/tmp/xvs-cluster-PREFIX: configs, logs, pid files, control sockets).
#
# Try: ip netns exec xvs-c1 curl -s 198.18.10.1   (a backend's name; new connections spread)
#      scripts/cluster.sh stop xvs 2; scripts/cluster.sh status xvs   (ecmp: two next hops left)
set -euo pipefail

cmd=${1:-}
P=${2:-xvs}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
RUN=${RUN:-/tmp/xvs-cluster-$P}
if [ "$cmd" != up ] && [ -f "$RUN/topology" ]; then TOPOLOGY=$(cat "$RUN/topology"); fi
TOPOLOGY=${TOPOLOGY:-ecmp}
case "$TOPOLOGY" in
  ecmp) DIRECTORS=${DIRECTORS:-3} ;;
  pair) DIRECTORS=${DIRECTORS:-2} ;;
  *) echo "cluster: TOPOLOGY is ecmp or pair" >&2; exit 2 ;;
esac
SPARE=${SPARE:-0}
PORT=${PORT:-80}
BACKENDS=${BACKENDS:-3}
SERVICE_BACKENDS=${SERVICE_BACKENDS:-$BACKENDS}
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
# Written by scripts/cluster.sh: director $n ($TOPOLOGY).
log_interval_secs = 0
neighbour_refresh_ms = 200
EOF
  if [ "$TOPOLOGY" = ecmp ]; then
    cat <<EOF

[director]
# A flow ECMP moves here mid-stream is scheduled (mh: the same backend as on every director).
sloppy_tcp = $([ "$SLOPPY" = 1 ] && echo true || echo false)

[announce]
interface = "xvs-vips"
EOF
  fi
  cat <<EOF

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
scheduler = "$([ "$TOPOLOGY" = ecmp ] && echo mh || echo rr)"
flags = "$([ "$TOPOLOGY" = ecmp ] && echo mh-port)"

[service.check]
type = "tcp"
interval_ms = 200
timeout_ms = 200
rise = 1
fall = 2
EOF
  for b in $(seq 1 "$SERVICE_BACKENDS"); do
    printf '\n[[service.backend]]\naddress = "198.18.3.%d"\nport = %d\nmethod = "%s"\n' $((10 + b)) "$PORT" \
      "$([ "$TOPOLOGY" = ecmp ] && echo dr || echo nat)"
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

keepalived_conf() {
  local n=$1 xvs=$2
  # The example, adapted: interfaces front/back, this director's router_id and priority, the
  # built binary, this director's xvs (both directors' processes are visible: match --config),
  # control socket, and a notify script writing the state to RUN/state<n>.
  sed -e "s/router_id xvs-a/router_id xvs-$n/" \
    -e "s/priority 150 /priority $((n == 1 ? 150 : 100)) /" \
    -e 's/\beth0\b/front/g; s/\beth1\b/back/g' \
    -e "s#process /usr/local/bin/xvs run#process $xvs run --config $RUN/x$n.toml#" \
    -e "s#/run/xvs/xvs.sock#$RUN/x$n.sock#" \
    -e "s#/usr/local/bin/xvs#$xvs#g" \
    -e "s#notify \"/usr/bin/logger -t keepalived-xvs\"#notify \"$RUN/notify$n.sh\"#" \
    "$ROOT/examples/keepalived/keepalived.conf"
}

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
  if [ "$TOPOLOGY" = pair ]; then
    if ! alive "$RUN/ka$n.pid"; then
      printf '#!/bin/sh\necho "$3" > %s/state%d.tmp && mv %s/state%d.tmp %s/state%d\n' \
        "$RUN" "$n" "$RUN" "$n" "$RUN" "$n" >"$RUN/notify$n.sh"
      chmod 755 "$RUN/notify$n.sh"
      keepalived_conf "$n" "$xvs" >"$RUN/keepalived$n.conf"
      rm -f "$RUN"/*"$n.kpid" "$RUN/vrrp$n.pid" "$RUN/state$n"
      # From the initial namespace with -s (track_process needs its process events).
      keepalived -n -l -D -G -P -s "$ns" -f "$RUN/keepalived$n.conf" -p "$RUN/keepalived$n.kpid" \
        -r "$RUN/vrrp$n.pid" -c "$RUN/checkers$n.kpid" -b "$RUN/bfd$n.kpid" \
        >>"$RUN/keepalived$n.log" 2>&1 &
      echo $! >"$RUN/ka$n.pid"
    fi
    echo "director $n: xvs pid $(cat "$RUN/x$n.pid"), keepalived pid $(cat "$RUN/ka$n.pid")"
    return
  fi
  if ! alive "$RUN/wd$n.pid"; then
    # A wedged xvs (alive, not answering) has its announce device set down: BIRD withdraws.
    ip netns exec "$ns" env XVS="$xvs" sh "$ROOT/examples/bird/xvs-watchdog.sh" "$RUN/x$n.sock" \
      xvs-vips 0.5 >>"$RUN/wd$n.log" 2>&1 &
    echo $! >"$RUN/wd$n.pid"
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
  # keepalived's VRRP child before its parent (which would restart it, or stop it cleanly).
  for f in "$RUN/vrrp$n.pid" "$RUN/ka$n.pid" "$RUN/x$n.pid" "$RUN/wd$n.pid" "$RUN/bird$n.pid"; do
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

# wait_state N: director N's VRRP state (≤ 10 s); prints it.
wait_state() {
  for _ in $(seq 1 100); do
    [ -s "$RUN/state$1" ] && break
    sleep 0.1
  done
  cat "$RUN/state$1" 2>/dev/null || echo none
}

up_pair() {
  command -v keepalived >/dev/null || die "keepalived missing (scripts/install-deps.sh)"
  local n b
  ip -n "$P-rt" route replace 198.18.10.0/24 via 198.18.1.254
  for b in $(seq 1 "$BACKENDS"); do
    ip -n "$P-b$b" route replace default via 198.18.3.254
  done
  for n in $(seq 1 "$DIRECTORS"); do start_director "$n"; done
  for _ in $(seq 1 100); do
    [ "$(cat "$RUN/state1" 2>/dev/null)" = MASTER ] && break
    sleep 0.1
  done
  [ "$(cat "$RUN/state1" 2>/dev/null)" = MASTER ] || { status; die "director 1 is not MASTER after 10 s"; }
  echo "pair $P: director 1 MASTER"
  status
}

up() {
  [ "$ALL" -le 9 ] || die "at most 9 directors"
  if [ "$TOPOLOGY" = ecmp ]; then command -v bird >/dev/null || die "bird missing (scripts/install-deps.sh)"; fi
  DIRECTORS=$ALL BACKENDS=$BACKENDS SERVERS=${SERVERS:-1} QUEUES=1 "$HERE/testbed.sh" up "$P" >/dev/null
  mkdir -p "$RUN"
  echo "$TOPOLOGY" >"$RUN/topology"
  if [ "$TOPOLOGY" = pair ]; then up_pair; return; fi
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
  if [ "$TOPOLOGY" = pair ]; then
    local n ns a
    for n in $(seq 1 9); do
      ns=$(dns "$n")
      ip netns list | grep -q "^$ns\b" || continue
      a=$(ip -n "$ns" -o -4 addr | grep -oE '198\.18\.[13]\.254' | tr '\n' ' ' || true)
      if alive "$RUN/ka$n.pid"; then
        echo "== director $n ($ns): VRRP $(cat "$RUN/state$n" 2>/dev/null || echo none); floating: ${a:-none}"
      else
        echo "== director $n ($ns): keepalived not running; floating: ${a:-none}"
      fi
    done
    return
  fi
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
  start)
    start_director "${3:?director number}"
    if [ "$TOPOLOGY" = pair ]; then
      echo "director $3: VRRP $(wait_state "$3")"
    else
      wait_established "$3" || die "director $3 not Established after 30 s"
    fi
    ;;
  stop) stop_director "${3:?director number}" ;;
  isolate) isolate "${3:?director number}" ;;
  status) status ;;
  down) down ;;
  *) echo "usage: $0 up|down|status [PREFIX] | start|stop|isolate PREFIX N" >&2; exit 2 ;;
esac
