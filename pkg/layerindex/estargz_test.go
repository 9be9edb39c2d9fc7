package layerindex

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/klauspost/compress/zstd"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// tocLayer converts files into an eStargz layer (zstd: zstd:chunked) with
// small chunks, so that big files span several.
func tocLayer(t testing.TB, useZstd bool, files []file) (string, []byte) {
	t.Helper()
	_, tarBlob := testLayer(t, false, files)
	opts := []estargz.Option{estargz.WithChunkSize(90_000)}
	if useZstd {
		opts = append(opts, estargz.WithCompression(struct {
			*zstdchunked.Compressor
			*zstdchunked.Decompressor
		}{&zstdchunked.Compressor{CompressionLevel: zstd.SpeedDefault}, &zstdchunked.Decompressor{}}))
	}
	b, err := estargz.Build(io.NewSectionReader(bytes.NewReader(tarBlob), 0, int64(len(tarBlob))), opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	blob, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "estargz")
	if err := os.WriteFile(p, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, blob
}

func TestTOCIndexReadsAnyRangeOfAnyFile(t *testing.T) {
	for _, c := range []struct {
		name      string
		zstd      bool
		mediaType string
	}{{"estargz", false, ocispec.MediaTypeImageLayerGzip}, {"zstd:chunked", true, ocispec.MediaTypeImageLayerZstd}} {
		t.Run(c.name, func(t *testing.T) {
			files := sampleFiles()
			files = append(files, file{hdr: files[1].hdr, data: []byte("a second small file")})
			files[len(files)-1].hdr.Name = "etc/hostname"
			path, blob := tocLayer(t, c.zstd, files)
			built, err := Build(path, c.mediaType, BuildOptions{SpanSize: 64 << 10})
			if err != nil {
				t.Fatal(err)
			}
			defer built.Windows.Close()
			data, format := built.Index, built.Format
			if format != FormatEStargz {
				t.Fatalf("format %q, want the layer's own TOC", format)
			}
			ix, err := Open(data, format, int64(len(blob)))
			if err != nil {
				t.Fatal(err)
			}
			defer ix.Close()
			byName := map[string]Entry{}
			for _, e := range ix.Entries() {
				byName[e.Name] = e
			}
			for _, f := range files {
				h := f.hdr
				e, ok := byName[filepath.Clean(h.Name)]
				if !ok {
					t.Errorf("%s: missing", h.Name)
					continue
				}
				if e.Type != h.Typeflag || e.Mode != h.Mode || e.UID != h.Uid || e.GID != h.Gid || !e.ModTime.Equal(h.ModTime) ||
					e.Devmajor != h.Devmajor || e.Devminor != h.Devminor || (h.Typeflag == '2' && e.Linkname != h.Linkname) {
					t.Errorf("%s: %+v, header %+v", h.Name, e, h)
				}
			}
			if byName["usr/bin/big-again"].Linkname != "usr/bin/big" {
				t.Errorf("hardlink: %+v", byName["usr/bin/big-again"])
			}
			big := byName["usr/bin/big"]
			if big.Xattrs["security.capability"] != "\x01\x00\x00\x02" || big.Xattrs["user.note"] != "hi" {
				t.Errorf("xattrs %q", big.Xattrs)
			}
			if n := len(ix.Spans(&big, 0, big.Size)); n < 7 {
				t.Errorf("the 700 KB file is in %d chunks, want 7 or more", n)
			}
			small := byName["etc/hostname"]
			p := make([]byte, 64)
			if n, err := ix.ReadAt(context.Background(), Source{Layer: bytes.NewReader(blob)}, &small, p, 0); err != io.EOF || string(p[:n]) != "a second small file" {
				t.Errorf("etc/hostname: %q, %v", p[:n], err)
			}
			want := files[2].data
			r := rand.New(rand.NewSource(2))
			for range 50 {
				off := r.Int63n(int64(len(want)))
				p := make([]byte, r.Intn(300_000)+1)
				n, err := ix.ReadAt(context.Background(), Source{Layer: bytes.NewReader(blob)}, &big, p, off)
				if err != nil && err != io.EOF {
					t.Fatal(err)
				}
				if !bytes.Equal(p[:n], want[off:off+int64(n)]) || (err == nil && n != len(p)) {
					t.Fatalf("read %d at %d: wrong bytes (n=%d, err=%v)", len(p), off, n, err)
				}
			}
			// A changed chunk is caught by its digest.
			other := bytes.Clone(blob)
			spans := ix.Spans(&big, 300_000, 1)
			other[spans[0].Start+(spans[0].End-spans[0].Start)/2] ^= 0xff
			fresh, _ := Open(data, format, int64(len(blob)))
			if _, err := fresh.ReadAt(context.Background(), Source{Layer: bytes.NewReader(other)}, &big, p, 300_000); err == nil {
				t.Error("a read of a changed chunk succeeded")
			}
		})
	}
}

func TestZstdWithoutTOCHasNoIndex(t *testing.T) {
	path, _ := testLayer(t, false, sampleFiles())
	if _, err := Build(path, ocispec.MediaTypeImageLayerZstd, BuildOptions{}); err == nil {
		t.Error("a layer that is not zstd got an index as zstd")
	}
}

func FuzzParseTOCIndex(f *testing.F) {
	path, blob := tocLayer(f, false, sampleFiles())
	built, err := Build(path, ocispec.MediaTypeImageLayerGzip, BuildOptions{})
	if err != nil {
		f.Fatal(err)
	}
	defer built.Windows.Close()
	f.Add(built.Index, int64(len(blob)))
	f.Add([]byte("not gzip"), int64(10))
	f.Fuzz(func(t *testing.T, data []byte, size int64) {
		ix, err := Open(data, FormatEStargz, size)
		if err != nil {
			return
		}
		// Whatever it accepted reads without panicking, from any blob.
		junk := make([]byte, 4096)
		for _, e := range ix.Entries() {
			small := true // regions up to 64 MiB are valid, but slow to fuzz
			for _, s := range ix.Spans(&e, e.Size/2, 16) {
				small = small && s.End-s.Start < 1<<20
			}
			if e.IsReg() && e.Size > 0 && small {
				ix.ReadAt(context.Background(), Source{Layer: bytes.NewReader(junk)}, &e, make([]byte, 16), e.Size/2)
			}
		}
	})
}

func TestTOCIndexRefusesChunksPastTheTOC(t *testing.T) {
	path, blob := tocLayer(t, false, sampleFiles())
	built, err := Build(path, ocispec.MediaTypeImageLayerGzip, BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer built.Windows.Close()
	raw, err := inflateIndex(built.Index)
	if err != nil {
		t.Fatal(err)
	}
	var ix tocIndex
	if err := json.Unmarshal(raw, &ix); err != nil {
		t.Fatal(err)
	}
	ix.TOCOffset = 1 // before every chunk
	bad, _ := json.Marshal(ix)
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(bad)
	zw.Close()
	if _, err := Open(z.Bytes(), FormatEStargz, int64(len(blob))); err == nil {
		t.Error("a TOC whose chunks lie past its own start was accepted")
	}
}
