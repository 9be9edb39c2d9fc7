package packs

import (
	"bytes"
	"context"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	"github.com/shoal-ipfs/shoal/internal/pagebuf"
)

// mixedLeaves are a blob's leaves, some of which can be written with
// O_DIRECT and some not: a leaf larger than a writer's staging buffer,
// 256 KiB leaves, a short one, and 256 KiB leaves again, which then lie
// off the page in the pack.
func mixedLeaves(t *testing.T) []blocks.Block {
	t.Helper()
	buf := make([]byte, 8<<20)
	for i := range buf {
		buf[i] = byte(i*7 + i>>12)
	}
	out := []blocks.Block{rawBlock(t, string(buf[:stageBytes+1<<20]))}
	for off := 5 << 20; off < 7<<20; off += 256 << 10 {
		out = append(out, rawBlock(t, string(buf[off:off+256<<10])))
	}
	out = append(out, rawBlock(t, string(buf[:1000])))
	for off := 7 << 20; off < 8<<20; off += 256 << 10 {
		out = append(out, rawBlock(t, string(buf[off:off+256<<10])))
	}
	return out
}

// concat is the blob the leaves make.
func concat(bs []blocks.Block) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b.RawData()...)
	}
	return out
}

// inOneBuffer copies the leaves into one large buffer, each gap bytes
// after the one before: with no gap, the leaves lie as the push's
// read-ahead holds them (on the page, up to the short one); with a gap,
// as a CAR stream's sections hold them, each after its CID.
func inOneBuffer(t *testing.T, bs []blocks.Block, gap int) []blocks.Block {
	t.Helper()
	total := 0
	for _, b := range bs {
		total += gap + len(b.RawData())
	}
	buf := pagebuf.Aligned(total)
	out := make([]blocks.Block, len(bs))
	off := 0
	for i, b := range bs {
		off += gap
		n := copy(buf[off:], b.RawData())
		nb, err := blocks.NewBlockWithCid(buf[off:off+n:off+n], b.Cid())
		if err != nil {
			t.Fatal(err)
		}
		out[i], off = nb, off+n
	}
	return out
}

func TestDirectWritesKeepThePackTheBlob(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name           string
		cached, direct float64
		gap            int
	}{
		{"probing", 0, 0, 0},
		{"direct faster", 1, 2, 0},
		{"direct faster, leaves off the page", 1, 2, 36},
		{"cache faster", 2, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _, _ := newStore(t)
			s.ways.cached, s.ways.direct = tc.cached, tc.direct
			leaves := inOneBuffer(t, mixedLeaves(t), tc.gap)
			w, err := s.NewWriter(DirectWhenFaster())
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			for i := 0; i < len(leaves); i += 5 {
				batch := leaves[i:min(i+5, len(leaves))]
				if err := w.Add(ctx, batch); err != nil {
					t.Fatal(err)
				}
				// Readable when Add returns.
				for _, b := range batch {
					got, err := s.Get(ctx, b.Cid())
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got.RawData(), b.RawData()) {
						t.Fatalf("leaf %s reads back wrong", b.Cid())
					}
				}
			}
			root := leaves[0].Cid()
			if err := w.Finish(ctx, root); err != nil {
				t.Fatal(err)
			}
			_, got, size := blobFile(t, s, root)
			if want := concat(leaves); size != int64(len(want)) || !bytes.Equal(got, want) {
				t.Fatalf("pack holds %d bytes, not the blob's %d", len(got), len(want))
			}
		})
	}
}

func TestWriteWaysUseTheFasterAndRetryTheOther(t *testing.T) {
	var ways writeWays
	if direct, probe := ways.pick(); direct || !probe {
		t.Fatalf("first pick: direct %v probe %v, want a probe of the cache", direct, probe)
	}
	ways.record(false, 0, 2<<20, 10e6) // 200 MB/s through the cache
	if direct, probe := ways.pick(); !direct || !probe {
		t.Fatalf("second pick: direct %v probe %v, want a probe of the disk", direct, probe)
	}
	ways.record(true, 2<<20, 0, 2e6) // 1 GB/s to the disk
	for i := 1; i < retryEvery; i++ {
		if direct, probe := ways.pick(); !direct || probe {
			t.Fatalf("pick %d: direct %v probe %v, want the disk", i, direct, probe)
		}
	}
	if direct, probe := ways.pick(); direct || !probe {
		t.Fatalf("pick %d: direct %v probe %v, want the cache tried again", retryEvery, direct, probe)
	}
	ways.record(false, 0, 2<<20, 1e6) // the cache is fast now
	if direct, _ := ways.pick(); direct {
		t.Fatal("the cache became faster but is not used")
	}
	// Small writes and writes that went mostly the other way say nothing.
	ways.record(true, 4096, 0, 1)
	ways.record(true, 1<<20, 3<<20, 1)
	if direct, _ := ways.pick(); direct {
		t.Fatal("an untimed write changed the choice")
	}
}
