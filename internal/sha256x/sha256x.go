// Package sha256x computes many independent SHA-256 digests at once.
//
// A blob's chunks are hashed one by one to make their CIDs, and on a CPU
// without SHA extensions that is most of what a push or a pull costs. With
// AVX-512, sixteen messages go through the compression function side by
// side, one in each 32-bit lane of a 512-bit register: on the project
// machine that is 3.4 times the throughput of crypto/sha256 on one core.
// The vector code needs the Go toolchain's simd experiment
// (GOEXPERIMENT=simd, which the Makefile sets); built without it, or run
// on a CPU without AVX-512, SumMany falls back to crypto/sha256.
//
// Stream hashes a blob and each of its chunks in one pass, on a CPU with
// the SHA extensions (pair.go).
package sha256x

import (
	"crypto/sha256"
	"slices"
)

// initialState is SHA-256's state before the first block.
var initialState = [8]uint32{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19}

// lanes is how many messages one pass of the vector code hashes.
const lanes = 16

// minLanes is the fewest messages worth a vector pass: one lane runs at
// about a fifth of crypto/sha256's speed, so fewer than five messages of a
// pass are hashed faster one at a time.
const minLanes = 5

// Accelerated reports whether SumMany hashes in vector lanes here.
func Accelerated() bool { return sum16 != nil }

// SumMany sets sums[i] to the SHA-256 digest of msgs[i]. sums must be at
// least as long as msgs.
func SumMany(msgs [][]byte, sums [][sha256.Size]byte) {
	sums = sums[:len(msgs)]
	if sum16 == nil || len(msgs) < minLanes {
		for i, m := range msgs {
			sums[i] = sha256.Sum256(m)
		}
		return
	}
	// A pass lasts as long as its longest message, so messages of like
	// length are hashed together: longest first.
	order := make([]int, len(msgs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return len(msgs[b]) - len(msgs[a]) })
	var group [lanes][]byte
	var out [lanes][sha256.Size]byte
	for start := 0; start < len(order); start += lanes {
		idx := order[start:min(start+lanes, len(order))]
		if len(idx) < minLanes {
			for _, i := range idx {
				sums[i] = sha256.Sum256(msgs[i])
			}
			continue
		}
		for k, i := range idx {
			group[k] = msgs[i]
		}
		sum16(group[:len(idx)], out[:len(idx)])
		for k, i := range idx {
			sums[i] = out[k]
		}
	}
}
