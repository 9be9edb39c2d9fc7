#!/usr/bin/env bash
# Installs the Debian packages the tests, demo and benchmarks use, if any is
# missing. Needs root (CI is root); prints what it does.
set -euo pipefail
pkgs=(skopeo umoci containerd runc fuse3 docker-registry debootstrap iproute2 nftables e2fsprogs git gcc zlib1g-dev chromium)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}" >&2
  if [[ $(id -u) != 0 ]]; then
    echo "deps: need root to install ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
