#!/usr/bin/env bash
# Runs every fuzz target for a short while (default 10s each).
#
# Go 1.26's fuzz coordinator can end a duration-bounded run with a bare
# "context deadline exceeded" when a worker is mid-call at the deadline
# (golang/go#75804, fixed in Go 1.27): no input failed, none is written.
# Such a run is tried once more; any other failure, or a written
# reproducer, fails at once.
#
# Minimizing each new interesting input may take the fuzzer up to a minute
# by default, with no execution counted; a short run then spends most of
# its time there and is most likely to end mid-call (above). Minimizing is
# bounded to a second: a failing input is still written, less reduced.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-10s}

# spurious: the output of a failed run is only the coordinator's deadline.
spurious() {
  grep -q 'context deadline exceeded' <<<"$1" && ! grep -qE 'Failing input written|panic:' <<<"$1"
}

for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
    echo "fuzz $pkg $f ($t)"
    for try in 1 2; do
      if out=$(go test -run='^$' -fuzz="^$f\$" -fuzztime="$t" -fuzzminimizetime=1s "$pkg" 2>&1); then
        break
      fi
      if ((try == 1)) && spurious "$out"; then
        echo "fuzz: $f ended on the fuzz coordinator's deadline with no failing input (golang/go#75804); once more"
        continue
      fi
      echo "$out" | tail -n 30
      echo "fuzz: $pkg $f failed; the failing input is in its testdata/fuzz"
      exit 1
    done
  done
done
