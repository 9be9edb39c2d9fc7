#!/usr/bin/env bash
# make cluster-test: the Kubernetes end-to-end test (test/e2e, build tag
# cluster). Brings up a real single-node Kubernetes built from the module
# proxy (scripts/build-kubernetes.sh, cached), loads shoal's image (make
# image) and installs the chart. Apart from make test: the Kubernetes build
# alone takes longer on a fresh machine than the rest of the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export CI=${CI:-}
scripts/deps.sh
SHOAL_CONTAINERD2=$(scripts/build-containerd.sh)
SHOAL_K8S=$(scripts/build-kubernetes.sh)
export SHOAL_CONTAINERD2 SHOAL_K8S
scripts/image.sh >/dev/null
export SHOAL_IMAGE_TAR=$PWD/bin/image.tar
export GOEXPERIMENT=simd
cd test/e2e
go test -tags cluster -count=1 -timeout 30m -v -run '^TestKubernetes$' .
