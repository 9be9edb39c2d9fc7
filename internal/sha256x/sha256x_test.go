package sha256x

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"testing"
)

func TestSumManyEqualsSHA256(t *testing.T) {
	t.Logf("vector lanes: %v", Accelerated())
	r := rand.New(rand.NewPCG(1, 2))
	// Lengths around the padding's edges (55/56 bytes into a block) and
	// blocks of different counts in one pass.
	edges := []int{0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000, 256 << 10}
	for round := range 200 {
		n := r.IntN(40)
		msgs := make([][]byte, n)
		for i := range msgs {
			size := edges[r.IntN(len(edges))]
			if r.IntN(2) == 0 {
				size = r.IntN(600)
			}
			msgs[i] = make([]byte, size)
			for j := range msgs[i] {
				msgs[i][j] = byte(r.Uint32())
			}
		}
		sums := make([][sha256.Size]byte, n)
		SumMany(msgs, sums)
		for i, m := range msgs {
			if sums[i] != sha256.Sum256(m) {
				t.Fatalf("round %d: message %d of %d (%d bytes): sum %x, want %x", round, i, n, len(m), sums[i], sha256.Sum256(m))
			}
		}
	}
}

func TestSumManySameLengths(t *testing.T) {
	// A blob's chunks: sixteen and more messages of one length, then a
	// short last one.
	data := make([]byte, 20*4096+17)
	for i := range data {
		data[i] = byte(i * 7)
	}
	var msgs [][]byte
	for off := 0; off < len(data); off += 4096 {
		msgs = append(msgs, data[off:min(off+4096, len(data))])
	}
	sums := make([][sha256.Size]byte, len(msgs))
	SumMany(msgs, sums)
	for i, m := range msgs {
		if sums[i] != sha256.Sum256(m) {
			t.Fatalf("chunk %d: wrong sum", i)
		}
	}
}

func BenchmarkSumMany(b *testing.B) {
	for _, size := range []int{256 << 10, 1 << 20} {
		msgs := make([][]byte, 16)
		for i := range msgs {
			msgs[i] = make([]byte, size)
		}
		sums := make([][sha256.Size]byte, len(msgs))
		b.Run(fmt.Sprintf("sha256x/%dKiB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(16 * size))
			for b.Loop() {
				SumMany(msgs, sums)
			}
		})
		b.Run(fmt.Sprintf("crypto-sha256/%dKiB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(16 * size))
			for b.Loop() {
				for i, m := range msgs {
					sums[i] = sha256.Sum256(m)
				}
			}
		})
	}
}
