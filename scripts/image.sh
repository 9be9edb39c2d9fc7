#!/usr/bin/env bash
# make image: shoal's own OCI image, without a Docker daemon.
#
#   bin/image      an OCI layout, tag latest
#   bin/image.tar  the same layout as one archive (ctr images import
#                  --base-name localhost/shoal bin/image.tar)
#
# Two layers: a Debian bookworm minbase root with CA certificates (the
# binary's cgo needs glibc; the mirror mode needs the certificates for
# HTTPS registries), made once by debootstrap from this machine's apt
# mirror and cached; and the shoal binary, built with -trimpath. Every
# file's time is fixed (the base's at 0, the binary's at the commit's
# time), and so are the config's dates, so that the same base and the
# same commit give the same image digest, however often it is built.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOEXPERIMENT=simd
CACHE=${SHOAL_CACHE:-$HOME/.cache/shoal}
base="$CACHE/shoal-image-base-bookworm"
out=bin/image

epoch=$(git log -1 --format=%ct 2>/dev/null || echo 0)
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)

if [[ ! -d "$base/rootfs" ]]; then
  mirror=$(scripts/apt-mirror.sh)
  work=$(mktemp -d)
  echo "image: debootstrap minbase bookworm (ca-certificates) from $mirror" >&2
  debootstrap --variant=minbase --include=ca-certificates bookworm "$work/rootfs" "$mirror" >&2
  # What differs from one bootstrap to the next and no program needs:
  # logs, apt's caches and lists, dpkg's backups, ldconfig's cache.
  (cd "$work/rootfs" && rm -rf var/log/* var/cache/apt/* var/lib/apt/lists/* \
    var/cache/ldconfig/aux-cache var/cache/debconf/*-old var/lib/dpkg/*-old etc/machine-id)
  find "$work/rootfs" -depth -exec touch -h -d @0 {} +
  mkdir -p "$CACHE"
  rm -rf "$base" && mkdir -p "$base" && mv "$work/rootfs" "$base/rootfs"
  rm -rf "$work"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/add/usr/local/bin" "$work/add/var/lib/shoal"
go build -trimpath -buildvcs=auto -o "$work/add/usr/local/bin/shoal" ./cmd/shoal
find "$work/add" -depth -exec touch -h -d "@$epoch" {} +

umoci init --layout "$work/oci"
umoci new --image "$work/oci:latest"
hist=(--history.created "$created" --history.author shoal)
umoci insert "${hist[@]}" --history.created_by "debootstrap --variant=minbase --include=ca-certificates bookworm" \
  --image "$work/oci:latest" "$base/rootfs" / >&2
umoci insert "${hist[@]}" --history.created_by "go build -trimpath ./cmd/shoal" \
  --image "$work/oci:latest" "$work/add" / >&2
umoci config --no-history --image "$work/oci:latest" --created "$created" \
  --os linux --architecture amd64 \
  --config.entrypoint /usr/local/bin/shoal --config.cmd daemon \
  --config.env SHOAL_HOME=/var/lib/shoal \
  --config.label "org.opencontainers.image.revision=$revision" \
  --config.label "org.opencontainers.image.title=shoal" \
  --config.label "org.opencontainers.image.description=Container images distributed peer-to-peer over IPFS" >&2
umoci gc --layout "$work/oci"
find "$work/oci" -depth -exec touch -h -d "@$epoch" {} +

rm -rf "$out" "$out.tar"
mkdir -p bin
cp -a "$work/oci" "$out"
tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner -C "$out" -cf "$out.tar" .
digest=$(sed -n 's/.*"digest":"\(sha256:[0-9a-f]*\)".*/\1/p' "$out/index.json" | head -1)
echo "image: $out (tag latest), $out.tar; manifest $digest" >&2
echo "$digest"
