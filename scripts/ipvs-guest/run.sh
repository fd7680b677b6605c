#!/usr/bin/env bash
# Boots the kernel-IPVS reference guest (built by build.sh) in one of init's two roles.
#
#   scripts/ipvs-guest/run.sh SCENARIO_DIR
#       parity: builds the guest, runs the scenarios and prints the serial console. SCENARIO_DIR
#       holds `list` (scenario names, one a line) and one directory per name with `rules.sh`
#       (ipvsadm commands, run by the guest's sh) and `flows.txt` (xvs simulate's flow format),
#       appended to the base initramfs as a second cpio archive (the kernel unpacks both).
#       XVS_GUEST_TIMEOUT (seconds, default 600) bounds the whole boot.
#   scripts/ipvs-guest/run.sh --agent WORKDIR TAP ADDR/LEN
#       agent: boots the already built guest (run build.sh first: this mode never downloads,
#       it usually runs inside a network namespace without a route out) with eth0 a virtio-net
#       NIC on the existing tap TAP of the caller's network namespace (run it there, e.g. with
#       `ip netns exec`) and ADDR/LEN on eth0. The console goes to WORKDIR/console.log; the
#       agent's request channel (agent.c, `agent ctl`) is the guest's second serial port, served
#       by QEMU on the unix socket WORKDIR/ctl.sock (QEMU waits for the caller to connect there
#       before it starts the guest, so the agent's first "@@ ready" is never lost). The script
#       execs QEMU: its pid is QEMU's, and the caller stops the guest by killing that pid (or
#       with the agent's `quit`). tests/support/ipvs_guest.rs does all this for Rust tests.
# Both roles share the QEMU command line below. The guest runs under QEMU's software emulation
# (TCG): its decisions are kernel IPVS's own, its timings mean nothing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${XVS_GUEST_DIR:-$repo/target/ipvs-guest}"
command -v qemu-system-x86_64 >/dev/null || { echo "run.sh: qemu-system-x86_64 missing (run scripts/install-deps.sh)" >&2; exit 1; }

# qemu_cmd INITRD EXTRA_CMDLINE QEMU_ARGS...: sets `cmd`, the one way this guest is booted.
qemu_cmd() {
  local initrd="$1" extra="$2"
  shift 2
  cmd=(qemu-system-x86_64 -accel tcg -m 512 -smp 1 -display none -monitor none -no-reboot
       -kernel "$out/vmlinuz" -initrd "$initrd"
       -append "console=ttyS0 quiet loglevel=1 panic=-1 rdinit=/init$extra" "$@")
}

if [ "${1:-}" = "--agent" ]; then
  [ $# -eq 4 ] || { echo "usage: run.sh --agent WORKDIR TAP ADDR/LEN" >&2; exit 2; }
  work="$2" tap="$3" addr="$4"
  [ -f "$out/vmlinuz" ] && [ -f "$out/base.cpio.gz" ] || { echo "run.sh: no guest in $out (run build.sh)" >&2; exit 1; }
  mkdir -p "$work"
  rm -f "$work/ctl.sock"
  qemu_cmd "$out/base.cpio.gz" " xvs.agent xvs.addr=$addr" \
    -serial "file:$work/console.log" -serial "unix:$work/ctl.sock,server=on,wait=on" \
    -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no,vhost=off" \
    -device virtio-net-pci,netdev=n0,mac=52:54:00:12:18:01
  exec "${cmd[@]}" < /dev/null
fi

scen="${1:?usage: run.sh SCENARIO_DIR | run.sh --agent WORKDIR TAP ADDR/LEN}"
[ -f "$scen/list" ] || { echo "run.sh: $scen/list missing" >&2; exit 1; }
"$here/build.sh" >&2
tmp="$(mktemp -d "$out/run.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/root/scenarios"
cp -r "$scen/." "$tmp/root/scenarios/"
(cd "$tmp/root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1 > "$tmp/scenarios.cpio.gz")
cat "$out/base.cpio.gz" "$tmp/scenarios.cpio.gz" > "$tmp/initrd.img"
qemu_cmd "$tmp/initrd.img" "" -nic none -serial stdio
timeout --kill-after=10 "${XVS_GUEST_TIMEOUT:-600}" "${cmd[@]}" < /dev/null
