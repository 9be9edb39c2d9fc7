#!/usr/bin/env bash
# Runs every fuzz target for a short while (default 10s each).
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-10s}
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
    echo "fuzz $pkg $f ($t)"
    if ! out=$(go test -run='^$' -fuzz="^$f\$" -fuzztime="$t" "$pkg" 2>&1); then
      echo "$out" | tail -n 30
      echo "fuzz: $pkg $f failed; the failing input is in its testdata/fuzz"
      exit 1
    fi
  done
done
