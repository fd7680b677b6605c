#!/usr/bin/env bash
# The one command that runs every test of xvs. It installs what a fresh machine lacks first
# (Debian packages for the AF_XDP build and the namespace testbed), then runs formatting and lint
# checks and the whole workspace's tests. Needs root for the network-namespace integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."

"$(dirname "$0")/install-deps.sh"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
echo "== scripts/demo.sh (the README's first command, end to end)"
scripts/demo.sh
