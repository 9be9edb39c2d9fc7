package layerindex

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// zeros is a reader of n zero bytes.
func zeros(n int64) io.Reader { return filled(0, n) }

// filled is a reader of n bytes b.
func filled(b byte, n int64) io.Reader { return io.LimitReader(byteReader(b), n) }

type byteReader byte

func (b byteReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}

// gzipMember is one gzip member of r's bytes.
func gzipMember(t *testing.T, r io.Reader) []byte {
	t.Helper()
	var z bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&z, gzip.BestCompression)
	if _, err := io.Copy(zw, r); err != nil {
		t.Fatal(err)
	}
	zw.Close()
	return z.Bytes()
}

// tarOf is a tar of one file of size zero bytes, without its end if open.
func tarOf(t *testing.T, size int64, open bool) io.Reader {
	t.Helper()
	var hdr bytes.Buffer
	tw := tar.NewWriter(&hdr)
	tw.WriteHeader(&tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: size})
	tw.Flush()
	parts := []io.Reader{&hdr, zeros(size), zeros((512 - size%512) % 512)}
	if !open {
		parts = append(parts, zeros(1024)) // the tar's end
	}
	return io.MultiReader(parts...)
}

func writeLayer(t *testing.T, blob []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "layer")
	if err := os.WriteFile(p, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLayersThatInflatePastTheBoundGetNoIndex: a gzip layer whose tar,
// or what follows the tar's end, inflates past the bound is refused with
// ErrInflatesPastBound, in one gzip member or many; one within it is
// indexed and reads back.
func TestLayersThatInflatePastTheBoundGetNoIndex(t *testing.T) {
	const bound = 4 << 20
	var members []byte
	for _, part := range []io.Reader{tarOf(t, 8<<20, true), zeros(1 << 20)} {
		members = append(members, gzipMember(t, part)...)
	}
	for i := 0; i < 8; i++ {
		members = append(members, gzipMember(t, zeros(1<<20))...)
	}
	for _, c := range []struct {
		name string
		blob []byte
	}{
		{"a file of zeros", gzipMember(t, tarOf(t, 16<<20, false))},
		{"zeros after the tar's end", gzipMember(t, io.MultiReader(tarOf(t, 1000, false), zeros(16<<20)))},
		{"zeros in many members", members},
	} {
		path := writeLayer(t, c.blob)
		for _, inline := range []bool{false, true} {
			_, err := Build(path, ocispec.MediaTypeImageLayerGzip, BuildOptions{Inline: inline, MaxTarSize: bound})
			if !errors.Is(err, ErrInflatesPastBound) {
				t.Errorf("%s (%d bytes), inline %v: %v, want %v", c.name, len(c.blob), inline, err, ErrInflatesPastBound)
			}
		}
	}
	path := writeLayer(t, gzipMember(t, tarOf(t, 2<<20, false)))
	for _, inline := range []bool{false, true} {
		built, err := Build(path, ocispec.MediaTypeImageLayerGzip, BuildOptions{Inline: inline, MaxTarSize: bound})
		if err != nil {
			t.Fatalf("a layer within the bound, inline %v: %v", inline, err)
		}
		defer built.Windows.Close()
		blob, _ := os.ReadFile(path)
		ix, err := Open(built.Index, built.Format, int64(len(blob)))
		if err != nil {
			t.Fatal(err)
		}
		e := ix.Entries()[0]
		p := make([]byte, 1000)
		if n, err := ix.ReadAt(t.Context(), sourceOf(built, blob), &e, p, 2<<20-1000); err != nil || n != 1000 || !bytes.Equal(p, make([]byte, 1000)) {
			t.Errorf("read back, inline %v: %d bytes, %v", inline, n, err)
		}
		ix.Close()
	}
}

// TestMaxTarSize: the default bound is a ratio of the compressed size
// plus a constant, and does not overflow.
func TestMaxTarSize(t *testing.T) {
	for _, c := range []struct{ compressed, want int64 }{
		{0, MaxInflateBase},
		{1 << 20, MaxInflateBase + MaxInflateRatio<<20},
		{1 << 62, 1<<63 - 1},
	} {
		if got := MaxTarSize(c.compressed); got != c.want {
			t.Errorf("MaxTarSize(%d) = %d, want %d", c.compressed, got, c.want)
		}
	}
}

// TestTOCThatInflatesPastTheBoundIsNotRead: an eStargz layer whose TOC
// inflates past MaxIndexSize is not indexed by its TOC, which would be
// held in memory whole to parse it; it gets a zTOC as any gzip layer.
func TestTOCThatInflatesPastTheBoundIsNotRead(t *testing.T) {
	_, blob := tocLayer(t, false, sampleFiles())
	gd := new(estargz.GzipDecompressor)
	_, tocOffset, _, err := gd.ParseFooter(blob[len(blob)-int(gd.FooterSize()):])
	if err != nil {
		t.Fatal(err)
	}
	toc, _, err := gd.ParseTOC(bytes.NewReader(blob[tocOffset:]))
	if err != nil {
		t.Fatal(err)
	}
	// The same TOC, with a field no one reads that takes it past the
	// bound: the whole of it must be read to parse it.
	tocJSON, _ := json.Marshal(toc)
	junk := int64(MaxIndexSize)
	head := append(tocJSON[:len(tocJSON)-1], `,"junk":"`...)
	size := int64(len(head)) + junk + 2
	var hdr bytes.Buffer
	tw := tar.NewWriter(&hdr)
	tw.WriteHeader(&tar.Header{Name: estargz.TOCTarName, Typeflag: tar.TypeReg, Mode: 0o644, Size: size})
	tw.Flush()
	tocMember := gzipMember(t, io.MultiReader(&hdr, bytes.NewReader(head), filled('a', junk), strings.NewReader(`"}`), zeros((512-size%512)%512+1024)))
	bomb := append(append(blob[:tocOffset:tocOffset], tocMember...), gzipFooter(tocOffset)...)
	built, err := Build(writeLayer(t, bomb), ocispec.MediaTypeImageLayerGzip, BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer built.Windows.Close()
	if built.Format == FormatEStargz {
		t.Errorf("indexed by a TOC of over %d bytes", MaxIndexSize)
	}
}

// gzipFooter is eStargz's footer naming the TOC at off.
func gzipFooter(off int64) []byte {
	sub := fmt.Sprintf("%016xSTARGZ", off)
	extra := binary.LittleEndian.AppendUint16([]byte("SG"), uint16(len(sub)))
	return estargz.CreateGzipFooter(append(extra, sub...))
}
