#!/bin/sh
# xvs-watchdog.sh SOCKET [DEVICE] [INTERVAL]: withdraw the VIPs of an `xvs run` that is alive but
# wedged (stopped, stuck: it no longer answers its control socket).
#
# A dead xvs needs no help: the kernel deletes its announce device and BIRD withdraws. A wedged
# one keeps the device and its addresses, so BIRD would go on announcing VIPs nobody forwards.
# Every INTERVAL seconds (default 0.5) this asks `xvs ctl status` (given INTERVAL to answer); on
# failure it sets DEVICE (default xvs-vips) down — BIRD's direct protocol withdraws the routes of
# a down interface — and sets it up again once xvs answers. It changes nothing while xvs is dead
# (no device) and a restarted xvs creates its device up. keepalived's track_script on
# `xvs ctl status` plays this part in a VRRP pair.
#
# Run it beside xvs and bird, e.g. as a systemd service with Restart=always; XVS names the binary
# (default /usr/local/bin/xvs).
set -u
SOCKET=${1:?usage: xvs-watchdog.sh SOCKET [DEVICE] [INTERVAL]}
DEVICE=${2:-xvs-vips}
INTERVAL=${3:-0.5}
XVS=${XVS:-/usr/local/bin/xvs}
state=up
while :; do
  if timeout "$INTERVAL" "$XVS" ctl --socket "$SOCKET" status >/dev/null 2>&1; then
    if [ "$state" = down ] && ip link set "$DEVICE" up 2>/dev/null; then
      state=up
      echo "xvs-watchdog: xvs answers again: $DEVICE up"
    fi
  elif [ "$state" = up ] && ip link set "$DEVICE" down 2>/dev/null; then
    state=down
    echo "xvs-watchdog: xvs does not answer: $DEVICE down (VIPs withdrawn)"
  fi
  sleep "$INTERVAL"
done
