package blob

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/ipld/merkledag"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	ipld "github.com/ipfs/go-ipld-format"
)

// vectorStream yields SHA256("shoal-vector-0") || SHA256("shoal-vector-1") || ...
type vectorStream struct {
	n   int
	buf []byte
}

func (v *vectorStream) Read(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		if len(v.buf) == 0 {
			sum := sha256.Sum256([]byte("shoal-vector-" + strconv.Itoa(v.n)))
			v.n++
			v.buf = sum[:]
		}
		n := copy(p, v.buf)
		v.buf = v.buf[n:]
		p = p[n:]
		total += n
	}
	return total, nil
}

type vector struct {
	size   int64
	sha256 string
	cid    string
}

func readVectors(t *testing.T, name string) []vector {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("kubo vectors: %v", err)
	}
	defer f.Close()
	var out []vector
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || strings.HasPrefix(line, "size\t") || line == "" {
			continue
		}
		cols := strings.Split(line, "\t")
		size, err := strconv.ParseInt(cols[0], 10, 64)
		if err != nil || len(cols) != 3 {
			t.Fatalf("bad vector line %q", line)
		}
		out = append(out, vector{size, cols[1], cols[2]})
	}
	return out
}

func memDAG() ipld.DAGService {
	bs := blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
	return merkledag.NewDAGService(blockservice.New(bs, nil))
}

func TestKuboVectors(t *testing.T) {
	for _, tc := range []struct {
		file   string
		layout Layout
	}{
		{"kubo-unixfs-vectors.tsv", Kubo},
		{"kubo-unixfs-v1-2025-vectors.tsv", V1_2025},
	} {
		for _, v := range readVectors(t, tc.file) {
			if v.size > 1<<30 && testing.Short() {
				t.Logf("%s: skipping the %d-byte vector in -short mode", tc.layout.Name, v.size)
				continue
			}
			t.Run(tc.layout.Name+"/"+strconv.FormatInt(v.size, 10), func(t *testing.T) {
				ctx := context.Background()
				h := sha256.New()
				r := io.TeeReader(io.LimitReader(&vectorStream{}, v.size), h)
				dag := memDAG()
				c, err := Add(ctx, dag, r, tc.layout)
				if err != nil {
					t.Fatal(err)
				}
				if got := hex.EncodeToString(h.Sum(nil)); got != v.sha256 {
					t.Fatalf("input sha256 %s, vector says %s", got, v.sha256)
				}
				if c.String() != v.cid {
					t.Fatalf("CID %s, kubo gives %s", c, v.cid)
				}
				if v.size > 64<<20 {
					return
				}
				rd, err := Open(ctx, dag, c)
				if err != nil {
					t.Fatal(err)
				}
				back, err := io.ReadAll(rd)
				if err != nil {
					t.Fatal(err)
				}
				want, _ := io.ReadAll(io.LimitReader(&vectorStream{}, v.size))
				if !bytes.Equal(back, want) {
					t.Fatal("bytes read back differ from bytes added")
				}
			})
		}
	}
}

func TestFetchRepeatedChunks(t *testing.T) {
	ctx := context.Background()
	src := memDAG()
	c, err := Add(ctx, src, bytes.NewReader(make([]byte, 5<<20)), Kubo)
	if err != nil {
		t.Fatal(err)
	}
	blocks := 0
	if err := Fetch(ctx, src, c, func(int) { blocks++ }); err != nil {
		t.Fatal(err)
	}
	if blocks != 2 { // one root, one zero leaf linked 20 times
		t.Fatalf("fetched %d distinct blocks, want 2", blocks)
	}
}
