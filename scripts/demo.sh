#!/usr/bin/env bash
# shoal's main job on embedded defaults, on one machine: make a small image,
# push it into node A (a daemon on loopback), pull it by CID on node B
# through A over libp2p, verify every blob, and say what happened.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d /tmp/shoal-demo.XXXXXX)
daemon_pid=""
cleanup() {
  [[ -n "$daemon_pid" ]] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

ms() { date +%s%3N; }
step() { printf '\n== %s\n' "$*"; }

step "build shoal"
# AVX-512 chunk hashing (internal/sha256x).
export GOEXPERIMENT=simd
go build -o "$work/shoal" ./cmd/shoal
go run ./internal/tools/mkimage -mib 24 "$work/image" >/dev/null
shoal="$work/shoal"
echo "image: a two-platform OCI layout, $(du -sh "$work/image" | cut -f1) on disk"

step "node A: init and start its daemon on 127.0.0.1, free ports"
export SHOAL_HOME="$work/a"
# mDNS stays off: this demo talks over loopback only.
"$shoal" init --mdns=false --listen /ip4/127.0.0.1/tcp/0 --listen /ip4/127.0.0.1/udp/0/quic-v1 --registry-listen 127.0.0.1:0
"$shoal" daemon >"$work/a.log" 2>&1 &
daemon_pid=$!
# Until the daemon answers: without one, `shoal id` answers from the
# home's configuration (its listen addresses, no registry), so the wait is
# for the registry's address, which only a running daemon has. Up to 30 s:
# a loaded machine (CI) can be slow to start it.
up=""
for _ in $(seq 150); do
  if "$shoal" id --json >"$work/a.id" 2>/dev/null && grep -q '"Registry": "[^"]' "$work/a.id"; then
    up=1
    break
  fi
  sleep 0.2
done
if [[ -z "$up" ]]; then
  echo "demo: A's daemon did not come up in 30 s; its log:" >&2
  cat "$work/a.log" >&2
  exit 1
fi
peer=$(grep -o '"/ip4/127.0.0.1/tcp/[^"]*' "$work/a.id" | head -n1 | tr -d '"')
registry=$(grep -o '"Registry": "[^"]*' "$work/a.id" | cut -d'"' -f4)
echo "A listens on $peer; its OCI registry on $registry"

step "push oci:image:demo into A"
t0=$(ms)
cid=$("$shoal" push "oci:$work/image:demo" | tail -n1)
t1=$(ms)
echo "root CID $cid ($((t1 - t0)) ms)"
"$shoal" inspect "$cid" | tee "$work/inspect.txt"
pushed=$(awk '$1 == "index" { print $3 }' "$work/inspect.txt")

step "node B: pull $cid from A over libp2p"
export SHOAL_HOME="$work/b"
"$shoal" init --mdns=false --listen /ip4/127.0.0.1/tcp/0 >/dev/null
t0=$(ms)
pulled=$("$shoal" pull "$cid" --peer "$peer" --to "oci:$work/pulled:demo" --timeout 30s)
t1=$(ms)
echo "pull took $((t1 - t0)) ms"

# A pull writes the plain form by default (docs/format.md, "Which digest is
# which"); --ipfs-urls keeps the stored form that inspect showed.
stored=$("$shoal" pull "$cid" --to "oci:$work/stored:demo" --ipfs-urls --timeout 30s)

step "verify: every blob's sha256 equals its name; the stored index is the pushed one"
bad=0
echo "pushed index $pushed"
echo "pulled index $pulled (plain), $stored (with --ipfs-urls)"
[[ -n "$pushed" && "$pushed" == "$stored" ]] || { echo "BAD: stored index digests differ"; bad=1; }
for f in "$work/pulled"/blobs/sha256/* "$work/stored"/blobs/sha256/*; do
  [[ "$(sha256sum "$f" | cut -d' ' -f1)" == "$(basename "$f")" ]] || { echo "BAD $f"; bad=1; }
done
"$shoal" images

step "A's registry serves the same image, in the plain form, to any OCI client as $registry/ipfs/$cid"
if command -v curl >/dev/null; then
  headers=$(curl -sfI -H 'Accept: application/vnd.oci.image.index.v1+json' "http://$registry/v2/ipfs/$cid/manifests/latest" | tr -d '\r')
  grep -iE '^(HTTP|content-type|docker-content-digest|shoal-root-cid)' <<<"$headers"
  served=$(grep -i '^docker-content-digest:' <<<"$headers" | awk '{print $2}')
  [[ "$served" == "$pulled" ]] || { echo "BAD: the registry serves $served, the pull wrote $pulled"; bad=1; }
else
  echo "(curl is not installed; try: skopeo inspect --tls-verify=false docker://$registry/ipfs/$cid)"
fi
[[ $bad == 0 ]] || { echo "demo: verification failed"; exit 1; }
echo
echo "demo: OK: $(ls "$work/pulled"/blobs/sha256 | wc -l) blobs verified, $(du -sh "$work/pulled" | cut -f1) pulled by CID $cid"
