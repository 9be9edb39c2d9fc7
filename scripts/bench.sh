#!/usr/bin/env bash
# Runs the benchmarks of bench/ on the cached Debian image, shoal side by
# side with kubo and a distribution registry, and prints the raw results.
# Usage: scripts/bench.sh [go test -bench regexp] [iterations]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
export SHOAL_KUBO=$(scripts/build-kubo.sh)
export SHOAL_BENCH_IMAGE=$(scripts/debian-image.sh)
export SHOAL_BENCH_PYTHON_IMAGE=$(scripts/debian-image.sh python)
export SHOAL_CONTAINERD2=$(scripts/build-containerd.sh)
mkdir -p bench/out
# AVX-512 chunk hashing (internal/sha256x); kubo and containerd are built
# without the experiment.
export GOEXPERIMENT=simd
go build -o bench/out/shoal ./cmd/shoal
export SHOAL_BIN=$PWD/bench/out/shoal
go test -run '^$' -bench "${1:-.}" -benchtime "${2:-5}x" -timeout 60m ./bench/ | tee bench/out/results.txt
