#!/usr/bin/env bash
# Installs the Debian packages xvs needs to build and test, if any are missing. Idempotent.
set -euo pipefail
pkgs=(clang llvm libelf-dev zlib1g-dev m4 pkg-config make gcc libbpf-dev iproute2 ethtool python3 nftables curl qemu-system-x86 cpio libc6-dev iputils-ping iputils-arping keepalived bird2 prometheus chromium dnsutils valgrind netsniff-ng)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi
