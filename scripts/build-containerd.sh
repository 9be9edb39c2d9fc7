#!/usr/bin/env bash
# Builds containerd 2.x (daemon, ctr and the runc shim) from the Go module
# proxy for the e2e tests, once: the binaries are cached by version, and the
# directory holding them is printed.
set -euo pipefail
# Built as their projects build them: without shoal's Go experiments.
unset GOEXPERIMENT
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
CACHE=${SHOAL_CACHE:-$HOME/.cache/shoal}
out="$CACHE/containerd-$CONTAINERD_VERSION"
if [[ -x "$out/containerd" && -x "$out/ctr" && -x "$out/containerd-shim-runc-v2" ]]; then
  echo "$out"
  exit 0
fi
mod="github.com/containerd/containerd/v2"
work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
(cd "$work" && GOFLAGS=-mod=mod go mod download -json "$mod@$CONTAINERD_VERSION" >/dev/null)
src="$(go env GOMODCACHE)/$mod@$CONTAINERD_VERSION"
cp -r "$src" "$work/containerd"
chmod -R u+w "$work/containerd"
cd "$work/containerd"
mkdir -p "$out.tmp"
# btrfs needs C headers the machine does not have; shoal's tests use overlayfs.
for cmd in containerd ctr containerd-shim-runc-v2; do
  GOFLAGS=-mod=mod CGO_ENABLED=${CGO_ENABLED:-1} go build -trimpath -tags "no_btrfs" \
    -ldflags "-X $mod/version.Version=$CONTAINERD_VERSION" -o "$out.tmp/$cmd" "./cmd/$cmd" >&2
done
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out"
