#!/usr/bin/env bash
# Prints the Debian mirror this machine's apt sources name for bookworm,
# for scripts that bootstrap a root filesystem from it.
set -euo pipefail
mirror=$(awk '
  /^URIs:/ { uri = $2 }
  /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") { print uri; exit } }
' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
if [[ -z "$mirror" ]]; then
  mirror=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
fi
[[ -n "$mirror" ]] || { echo "apt-mirror: no bookworm mirror in the apt sources" >&2; exit 1; }
echo "$mirror"
