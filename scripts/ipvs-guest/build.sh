#!/usr/bin/env bash
# Builds the kernel-IPVS reference guest: Debian's kernel package, ipvsadm (+ its shared libraries),
# busybox, iproute2's `ip` and the static agent (agent.c) packed into an initramfs.
#
#   scripts/ipvs-guest/build.sh            -> $XVS_GUEST_DIR/{vmlinuz,base.cpio.gz}
#
# XVS_GUEST_DIR defaults to target/ipvs-guest (git-ignored). Debian packages are fetched once with
# `apt-get download` into $XVS_GUEST_DIR/debs and reused; nothing downloaded is ever committed.
# XVS_GUEST_KERNEL_PKG overrides the kernel package (default: what linux-image-amd64 depends on).
# Needs: apt-get, dpkg-deb, cpio, gzip, gcc with static glibc, iproute2 (scripts/install-deps.sh).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${XVS_GUEST_DIR:-$repo/target/ipvs-guest}"
mkdir -p "$out/debs"
# One build at a time per cache (parallel test runs share it); outputs are replaced atomically.
exec 9>"$out/.lock"
flock 9
die() { echo "ipvs-guest/build.sh: $*" >&2; exit 1; }
for tool in apt-get apt-cache dpkg-deb cpio gzip gcc ip flock; do
  command -v "$tool" >/dev/null || die "missing '$tool' (run scripts/install-deps.sh)"
done

# 1. Debian packages (cached).
if [ ! -f "$out/debs/.complete" ]; then
  kpkg="${XVS_GUEST_KERNEL_PKG:-}"
  resolve() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'; }
  if [ -z "$kpkg" ]; then
    kpkg="$(resolve || true)"
    if [ -z "$kpkg" ]; then
      echo "== apt-get update (no package lists yet)"
      apt-get update -q >/dev/null || die "apt-get update failed: is Debian's package registry reachable?"
      kpkg="$(resolve || true)"
    fi
  fi
  [ -n "$kpkg" ] || die "cannot resolve linux-image-amd64 to a kernel package (no package registry?)"
  echo "== downloading $kpkg ipvsadm libnl-3-200 libnl-genl-3-200 libpopt0 busybox-static"
  rm -f "$out/debs/"*.deb
  fetch() {
    (cd "$out/debs" && apt-get download -q "$kpkg" ipvsadm libnl-3-200 libnl-genl-3-200 libpopt0 \
       busybox-static > "$out/download.log" 2>&1)
  }
  if ! fetch; then
    echo "== apt-get download failed; apt-get update (stale package lists?) and retry"
    apt-get update -q >/dev/null 2>&1 || true
    [ -n "${XVS_GUEST_KERNEL_PKG:-}" ] || kpkg="$(resolve || true)"
    [ -n "$kpkg" ] || die "cannot resolve linux-image-amd64 to a kernel package (no package registry?)"
    fetch || { cat "$out/download.log" >&2; die "apt-get download failed: is Debian's package registry reachable?"; }
  fi
  ls "$out/debs/"linux-image-*.deb >/dev/null 2>&1 || die "kernel package missing after download"
  rm -rf "$out/pkgs"
  touch "$out/debs/.complete"
fi

# 2. Unpacked packages (cached).
if [ ! -f "$out/pkgs/.complete" ]; then
  rm -rf "$out/pkgs"; mkdir -p "$out/pkgs"
  for deb in "$out/debs/"*.deb; do dpkg-deb -x "$deb" "$out/pkgs"; done
  touch "$out/pkgs/.complete"
fi
pk="$out/pkgs"
kver="$(ls "$pk/lib/modules" | head -1)"
[ -n "$kver" ] && [ -f "$pk/boot/vmlinuz-$kver" ] || die "no kernel in $pk"
cp "$pk/boot/vmlinuz-$kver" "$out/vmlinuz.tmp" && mv -f "$out/vmlinuz.tmp" "$out/vmlinuz"

# 3. The initramfs tree, rebuilt every time (a few seconds): init, agent, tools, modules.
st="$out/stage"
rm -rf "$st"
mkdir -p "$st"/{bin,sbin,etc,proc,sys,dev,run,tmp,lib/modules,scenarios}
cp "$here/init" "$st/init"; chmod 755 "$st/init"
cp "$pk/bin/busybox" "$st/bin/busybox"
gcc -O2 -Wall -static -o "$st/bin/agent" "$here/agent.c"

# A dynamically linked binary and the libraries ldd resolves for it (package ones first).
copy_bin() {
  local bin="$1" dest="$2"
  cp "$bin" "$st/$dest"
  LD_LIBRARY_PATH="$pk/lib/x86_64-linux-gnu:$pk/usr/lib/x86_64-linux-gnu" ldd "$bin" \
    | awk '/=>/ {print $3} /^\t\/lib/ {print $1}' | while read -r lib; do
      [ -f "$lib" ] || die "ldd: $bin needs $lib, not found"
      local name; name="$(basename "$lib")"
      case "$lib" in */ld-linux*) mkdir -p "$st/lib64"; cp -L "$lib" "$st/lib64/$name" ;;
                     *) mkdir -p "$st/lib/x86_64-linux-gnu"; cp -L "$lib" "$st/lib/x86_64-linux-gnu/$name" ;; esac
    done
}
copy_bin "$pk/sbin/ipvsadm" sbin/ipvsadm
copy_bin "$(command -v ip)" sbin/ip

# Kernel modules: the IPVS schedulers, veth, virtio-net (agent mode's eth0) and their `depends=`
# closure in load order.
kdir="$pk/lib/modules/$kver/kernel"
declare -A mpath seen
while read -r f; do n="$(basename "$f" .ko)"; mpath["${n//-/_}"]="$f"; done < <(find "$kdir" -name '*.ko')
order=()
add_mod() {
  local n="${1//-/_}"
  [ -n "${seen[$n]:-}" ] && return 0
  seen[$n]=1
  [ -n "${mpath[$n]:-}" ] || die "module $n not in $kver (built in?)"
  local deps
  deps="$(grep -ao 'depends=[^[:cntrl:]]*' "${mpath[$n]}" | head -1 | cut -d= -f2)"
  for d in ${deps//,/ }; do add_mod "$d"; done
  order+=("$n")
}
# crc32c_generic first: libcrc32c's soft dependency, which no modprobe would load here.
for m in crc32c_generic veth virtio_pci virtio_net ip_vs ip_vs_rr ip_vs_wrr ip_vs_sh ip_vs_mh ip_vs_dh ip_vs_lc ip_vs_wlc \
         ip_vs_sed ip_vs_nq ip_vs_fo ip_vs_ovf ip_vs_lblc ip_vs_lblcr; do
  add_mod "$m"
done
: > "$st/etc/modules"
for n in "${order[@]}"; do cp "${mpath[$n]}" "$st/lib/modules/$n.ko"; echo "$n" >> "$st/etc/modules"; done
echo "$kver" > "$st/etc/kernel-version"

(cd "$st" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1 > "$out/base.cpio.gz.tmp")
mv -f "$out/base.cpio.gz.tmp" "$out/base.cpio.gz"
echo "== guest: kernel $kver, $(wc -l < "$st/etc/modules") modules, initramfs $(du -h "$out/base.cpio.gz" | cut -f1) in $out"
