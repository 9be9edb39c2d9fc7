#!/usr/bin/env bash
# gofmt, go vet and staticcheck over the module and the end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOEXPERIMENT=${GOEXPERIMENT:-simd}
unformatted=$(gofmt -l $(git ls-files '*.go'))
[[ -z "$unformatted" ]] || { echo "gofmt: not formatted: $unformatted"; exit 1; }
go vet ./...
(cd test/e2e && go vet ./...)
go run "honnef.co/go/tools/cmd/staticcheck@v0.8.2" ./...
(cd test/e2e && go run "honnef.co/go/tools/cmd/staticcheck@v0.8.2" ./...)
