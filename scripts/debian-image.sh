#!/usr/bin/env bash
# Makes the benchmark image once and caches it: a debootstrap minbase
# bookworm root filesystem turned into a one-layer OCI image by umoci.
# Prints the layout's path. The mirror is the machine's own apt source.
# Usage: debian-image.sh [python]  (python: with python3 installed)
set -euo pipefail
CACHE=${SHOAL_CACHE:-$HOME/.cache/shoal}
flavour=${1:-}
out="$CACHE/debian-bookworm-oci"
include=()
if [[ "$flavour" == python ]]; then
  out="$CACHE/debian-bookworm-python-oci"
  include=(--include=python3)
elif [[ -n "$flavour" ]]; then
  echo "debian-image: unknown flavour $flavour (want python or nothing)" >&2
  exit 2
fi
if [[ -f "$out/index.json" ]]; then
  echo "$out"
  exit 0
fi
mirror=$("$(dirname "$0")/apt-mirror.sh")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "debian-image: debootstrap minbase bookworm from $mirror" >&2
debootstrap --variant=minbase "${include[@]}" bookworm "$work/rootfs" "$mirror" >&2
umoci init --layout "$work/oci"
umoci new --image "$work/oci:bookworm"
umoci unpack --image "$work/oci:bookworm" "$work/bundle" >&2
cp -a "$work/rootfs/." "$work/bundle/rootfs/"
umoci repack --image "$work/oci:bookworm" "$work/bundle" >&2
umoci config --image "$work/oci:bookworm" --os linux --architecture amd64 --config.cmd /bin/bash >&2
umoci gc --layout "$work/oci"
mkdir -p "$CACHE"
rm -rf "$out.tmp" && mv "$work/oci" "$out.tmp" && mv "$out.tmp" "$out"
echo "$out"
