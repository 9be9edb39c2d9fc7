.PHONY: build demo test unit lint bench fuzz image cluster-test clean

# Go's simd experiment compiles internal/sha256x's AVX-512 hashing; without
# it shoal builds and works the same, hashing chunks one at a time.
export GOEXPERIMENT := simd

# The binary.
build:
	go build -buildvcs=auto -o bin/shoal ./cmd/shoal

# shoal's main job on embedded defaults: push an image on one node, pull it
# by CID on another over loopback, verify it.
demo:
	scripts/demo.sh

# The whole test suite; installs what it needs on a fresh Debian machine.
test:
	scripts/test.sh

# The fast loop: unit and in-process tests (make unit), gofmt, vet and
# staticcheck (make lint).
unit:
	go test -short ./...

lint:
	scripts/lint.sh

# Benchmarks against kubo and a registry; results go in docs/benchmarks.md.
bench:
	scripts/bench.sh

fuzz:
	scripts/fuzz.sh 60s

# shoal's own OCI image, as the layout bin/image (tag latest) and the
# archive bin/image.tar, from a cached debootstrap root; reproducible.
image:
	scripts/image.sh

# A real single-node Kubernetes, built from the module proxy, running the
# chart with that image: probes, a pod by CID, a pod through the mirror,
# helm uninstall.
cluster-test:
	scripts/cluster-test.sh

clean:
	rm -rf bin
