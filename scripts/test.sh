#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need,
# builds kubo and containerd 2.x once (cached under ~/.cache/shoal), then
# runs the checks, the unit and in-process tests with the race detector,
# short fuzzing of every parser, and the end-to-end tests against real kubo,
# containerd and skopeo.
set -euo pipefail
cd "$(dirname "$0")/.."
export CI=${CI:-}

echo "== dependencies"
scripts/deps.sh
KUBO=$(scripts/build-kubo.sh)
export SHOAL_KUBO="$KUBO"
echo "kubo: $("$KUBO" version)"
export SHOAL_DEBIAN_IMAGE=$(scripts/debian-image.sh)
CONTAINERD2=$(scripts/build-containerd.sh)
export SHOAL_CONTAINERD2="$CONTAINERD2"
echo "containerd 2: $("$CONTAINERD2/containerd" --version)"

# AVX-512 chunk hashing (internal/sha256x); kubo and containerd are built
# without the experiment.
export GOEXPERIMENT=simd
echo "== gofmt, vet and staticcheck"
scripts/lint.sh

echo "== unit and in-process tests (race detector)"
go test -race -short -count=1 ./...
echo "== kubo CID vectors, the 1 GiB one included"
go test -count=1 -run 'TestKuboVectors' ./pkg/blob/

echo "== fuzzing each parser briefly"
scripts/fuzz.sh "${FUZZTIME:-10s}"

echo "== the Helm chart: rendered by Helm's engine, decoded strictly into the Kubernetes API types"
(cd deploy/helm/check && go vet ./... && go test -count=1 ./...)

echo "== end-to-end tests (kubo, containerd, skopeo, the OCI conformance suite)"
(cd test/e2e && go test -count=1 -timeout 20m -v ./...)
