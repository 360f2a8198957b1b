#!/usr/bin/env bash
# Makes the release tarball scripts/install.sh installs from:
#   dist/ebpf-mcp-VERSION-ARCH-linux.tar.gz
#     ebpf-mcp  scripts/install.sh  deploy/  configs/  docs/  examples/clients/  README.md  LICENSE
#
#   scripts/release-tarball.sh                 builds the release binary first
#   scripts/release-tarball.sh --binary PATH   packs this binary instead
#   scripts/release-tarball.sh --out DIR       writes the tarball into DIR (default dist/)
set -euo pipefail
cd "$(dirname "$0")/.."
binary=""
out=dist
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "release-tarball.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -z "$binary" ]; then
  cargo build --release --locked --bin ebpf-mcp
  binary=target/release/ebpf-mcp
fi
version="$("$binary" --version | awk '{print $2}')"
name="ebpf-mcp-$version-$(uname -m)-linux"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$name/scripts" "$stage/$name/examples"
install -m 0755 "$binary" "$stage/$name/ebpf-mcp"
install -m 0755 scripts/install.sh "$stage/$name/scripts/install.sh"
cp -r deploy configs docs README.md "$stage/$name/"
[ -f LICENSE ] && cp LICENSE "$stage/$name/"
cp -r examples/clients "$stage/$name/examples/clients"
mkdir -p "$out"
tar -C "$stage" -czf "$out/$name.tar.gz" "$name"
echo "$out/$name.tar.gz"
