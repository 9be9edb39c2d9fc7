#!/usr/bin/env bash
# gofmt, go vet and staticcheck over the module, the end-to-end tests (the
# Kubernetes one too, build tag cluster) and the tools' own modules.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOEXPERIMENT=${GOEXPERIMENT:-simd}
unformatted=$(gofmt -l $(git ls-files '*.go'))
[[ -z "$unformatted" ]] || { echo "gofmt: not formatted: $unformatted"; exit 1; }
go vet ./...
(cd test/e2e && go vet ./... && go vet -tags cluster ./...)
staticcheck="honnef.co/go/tools/cmd/staticcheck@v0.8.2"
go run "$staticcheck" ./...
(cd test/e2e && go run "$staticcheck" ./... && go run "$staticcheck" -tags cluster ./...)
for m in deploy/helm/check internal/tools/cluster; do
  (cd "$m" && go vet ./... && go run "$staticcheck" ./...)
done
