#!/usr/bin/env bash
# Builds kubo (the reference IPFS daemon) from the Go module proxy for the
# interop tests and benchmarks, once: the binary is cached by version.
#
# kubo v0.43.1 pins a go-libp2p fork through a replace line that the proxy
# does not serve; the release it forked from builds, so we require that.
set -euo pipefail
# Built as their projects build them: without shoal's Go experiments.
unset GOEXPERIMENT
KUBO_VERSION=${KUBO_VERSION:-v0.43.1}
LIBP2P_VERSION=${LIBP2P_VERSION:-v0.51.0}
CACHE=${SHOAL_CACHE:-$HOME/.cache/shoal}
out="$CACHE/kubo-$KUBO_VERSION/ipfs"
if [[ -x "$out" ]]; then
  echo "$out"
  exit 0
fi
work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
(cd "$work" && GOFLAGS=-mod=mod go mod download -json "github.com/ipfs/kubo@$KUBO_VERSION" >/dev/null)
src=$(cd "$work" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' "github.com/ipfs/kubo@$KUBO_VERSION" 2>/dev/null || true)
if [[ -z "$src" ]]; then
  src="$(go env GOMODCACHE)/github.com/ipfs/kubo@$KUBO_VERSION"
fi
cp -r "$src" "$work/kubo"
chmod -R u+w "$work/kubo"
cd "$work/kubo"
sed -i '/^replace github.com\/libp2p\/go-libp2p /d' go.mod
go mod edit -require="github.com/libp2p/go-libp2p@$LIBP2P_VERSION"
GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 || true
mkdir -p "$(dirname "$out")"
GOFLAGS=-mod=mod go build -trimpath -o "$out.tmp" ./cmd/ipfs >&2
mv "$out.tmp" "$out"
echo "$out"
