#!/usr/bin/env bash
# The xvs demo: builds xvs, brings up the namespace testbed (scripts/testbed.sh), runs the director
# on examples/demo/testbed.toml, sends real HTTP and UDP requests through NAT, DR, TUN and FullNAT
# (IPv4 and IPv6), prints which backend served each, asks the DNS responder (dig) and the HTTP
# redirect listener (curl) once, shows `xvs ctl -Ln --stateless` and `xvs ctl -Ln --stats`, and
# tears everything down. Needs root (namespaces, XDP). Installs the Debian packages it needs.
#
#   scripts/demo.sh [--io afxdp|packet]
set -euo pipefail
cd "$(dirname "$0")/.."
IO=afxdp
[ "${1:-}" = "--io" ] && IO=${2:?"--io needs afxdp or packet"}
[ "$(id -u)" -eq 0 ] || { echo "demo.sh: needs root (network namespaces, XDP)" >&2; exit 1; }

scripts/install-deps.sh
echo "== building xvs (release)"
cargo build --release --quiet
XVS=$PWD/target/release/xvs
P=xvsdemo
SOCK=/tmp/$P.sock
LOG=/tmp/$P.log
PID=

cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  fi
  scripts/testbed.sh down "$P" >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "== testbed up ($P): client, router, director, 3 backends"
scripts/testbed.sh down "$P" >/dev/null 2>&1 || true
scripts/testbed.sh up "$P" >/dev/null
echo "== xvs run --io $IO (log: $LOG)"
ip netns exec "$P-dir" "$XVS" run --config examples/demo/testbed.toml --io "$IO" --socket "$SOCK" 2>"$LOG" &
PID=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; kill -0 "$PID" || { cat "$LOG"; exit 1; }; sleep 0.1; done
[ -S "$SOCK" ] || { echo "xvs did not come up"; cat "$LOG"; exit 1; }
# Let the neighbour table resolve the backends and the router.
for a in 198.18.3.11 198.18.3.12 198.18.3.13 198.18.1.1; do ip netns exec "$P-dir" ping -c1 -W1 "$a" >/dev/null 2>&1 || true; done
sleep 1

c1() { ip netns exec "$P-c1" "$@"; }
udp_ask() {
  c1 python3 -c 'import socket,sys
a=sys.argv[1]; s=socket.socket(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
for i in range(3):
  s.sendto(b"hello",(a,5000))
  try:
    d,src=s.recvfrom(100); print(d.decode().split()[0], "(reply from", src[0] + ")"); break
  except socket.timeout: pass
else: print("no answer")' "$1"
}

failures=0
for m in nat:1 dr:2 tun:3 fullnat:4; do
  name=${m%%:*}; k=${m##*:}
  for vip in "198.18.10.$k" "2001:2:0:10::$k"; do
    url="http://$vip/"; [[ $vip == *:* ]] && url="http://[$vip]/"
    served=$(for _ in $(seq 12); do c1 curl -s -m 3 "$url" || echo FAILED; done | sort | uniq -c | awk '{printf "%s×%s ", $2, $1}')
    udp=$(udp_ask "$vip")
    printf '%-8s %-18s HTTP x12 (wrr 1:2:3): %s\n' "$name" "$vip" "$served"
    printf '%-8s %-18s UDP: %s\n' "$name" "$vip" "$udp"
    case "$served $udp" in *FAILED*|*"no answer"*) failures=$((failures + 1)) ;; esac
  done
done

# The stateless methods beside them: one DNS answer and one redirect (not followed: the
# backends reach the client LAN through the director, which forwards only the L4 services).
dns=$(c1 dig @198.18.1.2 +short +time=2 +tries=2 www.lb.example A | tr '\n' ' ')
printf '%-8s %-18s dig A (wrr 1:2:3): %s\n' dns www.lb.example "$dns"
redirect=$(c1 curl -s -m 3 -o /dev/null -w '%{http_code} Location: %{redirect_url}' 'http://198.18.1.2:8080/index.html?lang=en')
printf '%-8s %-18s curl /index.html?lang=en: %s\n' redirect 198.18.1.2:8080 "$redirect"
case "$dns" in 198.18.3.1[123]\ ) ;; *) failures=$((failures + 1)) ;; esac
case "$redirect" in "302 Location: http://198.18.3.1"[123]"/index.html?lang=en") ;; *) failures=$((failures + 1)) ;; esac

echo
echo "== xvs ctl -Ln --stateless"
"$XVS" ctl --socket "$SOCK" -Ln --stateless
echo
echo "== xvs ctl -Ln --stats"
"$XVS" ctl --socket "$SOCK" -Ln --stats | head -40
echo
echo "== xvs ctl -Ln (first services)"
"$XVS" ctl --socket "$SOCK" -Ln | head -12
echo
echo "== xvs ctl status"
"$XVS" ctl --socket "$SOCK" status
echo "== metrics (a few lines of http://127.0.0.1:9100/metrics)"
ip netns exec "$P-dir" curl -s -m 2 http://127.0.0.1:9100/metrics | grep -E '^xvs_worker_(rx|tx)_packets_total' || true
echo
echo "== stopping (SIGTERM) and tearing down"
if [ "$failures" -ne 0 ]; then
  echo "demo: $failures VIP(s) or stateless method(s) did not answer as expected (log: $LOG)" >&2
  exit 1
fi
