#!/usr/bin/env bash
# Boots the kernel-IPVS reference guest on a scenario directory and prints its serial console.
#
#   scripts/ipvs-guest/run.sh SCENARIO_DIR
#
# SCENARIO_DIR holds `list` (scenario names, one a line) and one directory per name with
# `rules.sh` (ipvsadm commands, run by the guest's sh) and `flows.txt` (xvs simulate's flow format).
# It is appended to the base initramfs as a second cpio archive (the kernel unpacks both).
# The guest runs under QEMU's software emulation (TCG): its decisions are kernel IPVS's own, its
# timings mean nothing. XVS_GUEST_TIMEOUT (seconds, default 600) bounds the whole boot.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${XVS_GUEST_DIR:-$repo/target/ipvs-guest}"
scen="${1:?usage: run.sh SCENARIO_DIR}"
[ -f "$scen/list" ] || { echo "run.sh: $scen/list missing" >&2; exit 1; }
command -v qemu-system-x86_64 >/dev/null || { echo "run.sh: qemu-system-x86_64 missing (run scripts/install-deps.sh)" >&2; exit 1; }
"$here/build.sh" >&2
tmp="$(mktemp -d "$out/run.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/root/scenarios"
cp -r "$scen/." "$tmp/root/scenarios/"
(cd "$tmp/root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1 > "$tmp/scenarios.cpio.gz")
cat "$out/base.cpio.gz" "$tmp/scenarios.cpio.gz" > "$tmp/initrd.img"
timeout --kill-after=10 "${XVS_GUEST_TIMEOUT:-600}" \
  qemu-system-x86_64 -accel tcg -m 512 -smp 1 -nographic -no-reboot -nic none \
    -kernel "$out/vmlinuz" -initrd "$tmp/initrd.img" \
    -append "console=ttyS0 quiet loglevel=1 panic=-1 rdinit=/init" < /dev/null
