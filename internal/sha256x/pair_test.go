package sha256x

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"os"
	"os/exec"
	"testing"
)

// TestStreamMatchesCryptoSHA256: every chunk's digest and the whole
// stream's equal crypto/sha256's, for chunks of every length around a
// block's edges and for a stream left between blocks by a short chunk.
func TestStreamMatchesCryptoSHA256(t *testing.T) {
	t.Logf("SHA extensions: %v", pairAccelerated)
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	sizes := [][]int{
		{},
		{0},
		{1},
		{55}, {56}, {63}, {64}, {65}, {119}, {120}, {128},
		{256 << 10, 256 << 10, 1000},
		{64, 64, 128, 0, 192},
		{100, 64, 64, 28, 64},  // misaligned, then aligned again
		{63, 1, 64, 65, 63, 0}, // every way around an edge
	}
	for range 50 {
		var s []int
		for range 1 + rng.IntN(8) {
			s = append(s, rng.IntN(3000))
		}
		sizes = append(sizes, s)
	}
	for _, chunks := range sizes {
		st := NewStream()
		off := 0
		for i, n := range chunks {
			chunk := data[off : off+n]
			// Each way of adding bytes, in turn; ChunkIf first refuses a
			// chunk that is not the one wanted, which adds nothing.
			switch want := sha256.Sum256(chunk); i % 3 {
			case 0:
				if got := st.Chunk(chunk); got != want {
					t.Fatalf("chunks %v: chunk at %d: %x, want %x", chunks, off, got, want)
				}
			case 1:
				if st.ChunkIf(data[off+1:off+1+n], want) && n > 0 {
					t.Fatalf("chunks %v: ChunkIf took the wrong chunk at %d", chunks, off)
				}
				if !st.ChunkIf(chunk, want) {
					t.Fatalf("chunks %v: ChunkIf refused the chunk at %d", chunks, off)
				}
			case 2:
				if k, err := st.Write(chunk); k != n || err != nil {
					t.Fatalf("chunks %v: Write: %d, %v", chunks, k, err)
				}
			}
			off += n
		}
		if got, want := st.Sum(), sha256.Sum256(data[:off]); got != want {
			t.Fatalf("chunks %v: stream %x, want %x", chunks, got, want)
		}
	}
}

// BenchmarkStream: a 256 KiB chunk's digest and the stream's, against
// crypto/sha256 hashing the chunk twice (once alone, once in the stream).
func BenchmarkStream(b *testing.B) {
	chunk := make([]byte, 256<<10)
	b.Run("stream", func(b *testing.B) {
		b.SetBytes(int64(len(chunk)))
		s := NewStream()
		for b.Loop() {
			s.Chunk(chunk)
		}
		s.Sum()
	})
	b.Run("crypto-sha256-twice", func(b *testing.B) {
		b.SetBytes(int64(len(chunk)))
		h := sha256.New()
		for b.Loop() {
			h.Write(chunk)
			sha256.Sum256(chunk)
		}
		h.Sum(nil)
	})
}

// TestKernelIsGenerated: pair_amd64.s is what its generator writes, so
// that a change to one is not lost in the other.
func TestKernelIsGenerated(t *testing.T) {
	out, err := exec.Command("go", "run", "./_gen").Output()
	if err != nil {
		t.Fatalf("go run ./_gen: %v", err)
	}
	have, err := os.ReadFile("pair_amd64.s")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, have) {
		t.Error("pair_amd64.s differs from what go run ./_gen writes: run go generate ./internal/sha256x")
	}
}

func BenchmarkCryptoSHA256Once(b *testing.B) {
	chunk := make([]byte, 256<<10)
	b.SetBytes(int64(len(chunk)))
	for b.Loop() {
		sha256.Sum256(chunk)
	}
}
