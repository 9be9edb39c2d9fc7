package layerindex

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

type file struct {
	hdr  tar.Header
	data []byte
}

func testLayer(t testing.TB, gz bool, files []file) (string, []byte) {
	t.Helper()
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, f := range files {
		h := f.hdr
		h.Size = int64(len(f.data))
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		tw.Write(f.data)
	}
	tw.Close()
	blob := raw.Bytes()
	if gz {
		var z bytes.Buffer
		zw := gzip.NewWriter(&z)
		zw.Write(blob)
		zw.Close()
		blob = z.Bytes()
	}
	p := filepath.Join(t.TempDir(), "layer")
	if err := os.WriteFile(p, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, blob
}

func sampleFiles() []file {
	big := make([]byte, 700_000)
	rand.New(rand.NewSource(1)).Read(big)
	mtime := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	return []file{
		{hdr: tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime}},
		{hdr: tar.Header{Name: "etc/os-release", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mtime}, data: []byte("ID=debian\n")},
		{hdr: tar.Header{Name: "usr/bin/big", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 7, Gid: 8, ModTime: mtime,
			PAXRecords: map[string]string{"SCHILY.xattr.security.capability": "\x01\x00\x00\x02", "SCHILY.xattr.user.note": "hi"}}, data: big},
		{hdr: tar.Header{Name: "usr/bin/big-again", Typeflag: tar.TypeLink, Linkname: "usr/bin/big", ModTime: mtime}},
		{hdr: tar.Header{Name: "usr/bin/sh", Typeflag: tar.TypeSymlink, Linkname: "big", Mode: 0o777, ModTime: mtime}},
		{hdr: tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666, ModTime: mtime}},
	}
}

// zTOCCases are the zTOC flavours: a gzip layer with its windows apart
// (the default) or inline, and an uncompressed layer.
var zTOCCases = []struct {
	name   string
	gz     bool
	inline bool
	format string
}{
	{"gzip split", true, false, FormatZTOCSplit},
	{"gzip inline", true, true, FormatZTOC},
	{"tar", false, false, FormatZTOC},
}

// buildZ indexes a test layer as c says and opens the index, with a
// source reading blob and the index's windows.
func buildZ(t testing.TB, path string, gz, inline bool, span int64) (*Built, Reader) {
	t.Helper()
	mt := ocispec.MediaTypeImageLayer
	if gz {
		mt = ocispec.MediaTypeImageLayerGzip
	}
	built, err := Build(path, mt, BuildOptions{SpanSize: span, Inline: inline})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { built.Windows.Close() })
	fi, _ := os.Stat(path)
	ix, err := Open(built.Index, built.Format, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ix.Close)
	return built, ix
}

// sourceOf reads blob, and the windows of built.
func sourceOf(built *Built, blob []byte) Source {
	return Source{Layer: bytes.NewReader(blob), Windows: bytes.NewReader(bytes.Join(windowsOf(built), nil))}
}

// windowsOf reads built's windows; nil for an index without.
func windowsOf(built *Built) [][]byte {
	if built.Windows == nil {
		return nil
	}
	var out [][]byte
	for c := built.Windows.Chunks(); ; {
		w, err := c.Next()
		if err != nil {
			return out
		}
		out = append(out, w)
	}
}

func TestIndexReadsAnyRangeOfAnyFile(t *testing.T) {
	for _, c := range zTOCCases {
		t.Run(c.name, func(t *testing.T) {
			files := sampleFiles()
			path, blob := testLayer(t, c.gz, files)
			built, ix := buildZ(t, path, c.gz, c.inline, 64<<10)
			if built.Format != c.format || (c.format == FormatZTOCSplit) != (len(windowsOf(built)) > 1) {
				t.Fatalf("format %q with %d windows, want %q", built.Format, len(windowsOf(built)), c.format)
			}
			entries := ix.Entries()
			if len(entries) != len(files) {
				t.Fatalf("%d entries, want %d", len(entries), len(files))
			}
			for i, e := range entries {
				h := files[i].hdr
				if e.Name != h.Name || e.Type != h.Typeflag || e.Mode != h.Mode || e.UID != h.Uid || e.Linkname != h.Linkname ||
					!e.ModTime.Equal(h.ModTime) || e.Devmajor != h.Devmajor || e.Devminor != h.Devminor {
					t.Errorf("entry %d: %+v, header %+v", i, e, h)
				}
			}
			big := &entries[2]
			if big.Xattrs["security.capability"] != "\x01\x00\x00\x02" || big.Xattrs["user.note"] != "hi" {
				t.Errorf("xattrs %q", big.Xattrs)
			}
			want := files[2].data
			src := sourceOf(built, blob)
			r := rand.New(rand.NewSource(2))
			for range 50 {
				off := r.Int63n(int64(len(want)))
				p := make([]byte, r.Intn(200_000)+1)
				n, err := ix.ReadAt(context.Background(), src, big, p, off)
				if err != nil && err != io.EOF {
					t.Fatal(err)
				}
				if !bytes.Equal(p[:n], want[off:off+int64(n)]) || (err == nil && n != len(p)) {
					t.Fatalf("read %d at %d: wrong bytes (n=%d, err=%v)", len(p), off, n, err)
				}
			}
		})
	}
}

// TestSplitIndexIsSmaller: the windows apart, the index a mount fetches
// whole is a fraction of the inline one, and each window is read on its
// own.
func TestSplitIndexIsSmaller(t *testing.T) {
	path, _ := testLayer(t, true, sampleFiles())
	split, _ := buildZ(t, path, true, false, 64<<10)
	inline, _ := buildZ(t, path, true, true, 64<<10)
	if len(split.Index)*2 > len(inline.Index) {
		t.Errorf("split index %d bytes, inline %d: want under half", len(split.Index), len(inline.Index))
	}
	for i, w := range windowsOf(split) {
		if len(w) == 0 || len(w) > maxWindow {
			t.Errorf("window %d: %d bytes", i, len(w))
		}
	}
}

func TestIndexOfAnotherBlobIsRefused(t *testing.T) {
	for _, c := range zTOCCases[:2] {
		t.Run(c.name, func(t *testing.T) {
			path, blob := testLayer(t, true, sampleFiles())
			built, ix := buildZ(t, path, true, c.inline, 64<<10)
			if _, err := Open(built.Index, built.Format, int64(len(blob))+1); err == nil {
				t.Error("an index for a blob of another size was accepted")
			}
			other := bytes.Clone(blob)
			other[len(other)/2] ^= 0xff
			if !readFails(ix, sourceOf(built, other)) {
				t.Fatal("every read of a changed blob succeeded")
			}
		})
	}
}

// TestSplitIndexRefusesWrongWindows: a window that is not the one the
// index names is refused, never used to inflate.
func TestSplitIndexRefusesWrongWindows(t *testing.T) {
	path, blob := testLayer(t, true, sampleFiles())
	built, _ := buildZ(t, path, true, false, 64<<10)
	all := windowsOf(built)
	windows := bytes.Join(all, nil)
	// A window in the middle: the last span may be empty, never read.
	k := len(all) / 2
	at := len(bytes.Join(all[:k], nil))
	for name, w := range map[string][]byte{
		"changed":   flipByte(windows, at+len(all[k])/2),
		"truncated": windows[:at+10],
		"missing":   nil,
	} {
		ix, err := Open(built.Index, built.Format, int64(len(blob)))
		if err != nil {
			t.Fatal(err)
		}
		src := Source{Layer: bytes.NewReader(blob)}
		if w != nil {
			src.Windows = bytes.NewReader(w)
		}
		if !readFails(ix, src) {
			t.Errorf("%s windows: every read succeeded", name)
		}
		ix.Close()
	}
}

func flipByte(b []byte, i int) []byte {
	b = bytes.Clone(b)
	b[i] ^= 0xff
	return b
}

// readFails reads the big sample file through ix in steps, and reports
// whether a read failed.
func readFails(ix Reader, src Source) bool {
	p := make([]byte, 100)
	e := &ix.Entries()[2]
	for off := int64(0); off < e.Size; off += 16 << 10 {
		if _, err := ix.ReadAt(context.Background(), src, e, p, off); err != nil {
			return true
		}
	}
	return false
}

func TestUnsupportedCompression(t *testing.T) {
	if _, err := Compression("application/vnd.oci.image.layer.v1.tar+bzip2"); err == nil {
		t.Error("bzip2 accepted")
	}
}

// FuzzBuildAndRead: whatever bytes a layer holds, building its index
// either fails or gives an index whose files read back as the tar has them.
func FuzzBuildAndRead(f *testing.F) {
	_, blob := testLayer(f, false, sampleFiles()[:3])
	f.Add(blob)
	f.Add([]byte("not a tar"))
	f.Fuzz(func(t *testing.T, blob []byte) {
		p := filepath.Join(t.TempDir(), "layer")
		os.WriteFile(p, blob, 0o644)
		built, err := Build(p, ocispec.MediaTypeImageLayer, BuildOptions{SpanSize: 4096})
		if err != nil {
			return
		}
		readsAsTar(t, built, blob, bytes.NewReader(blob))
	})
}

// readsAsTar checks that the files of blob read through the index built
// of it as tarStream, the blob's tar stream, has them.
func readsAsTar(t *testing.T, built *Built, blob []byte, tarStream io.Reader) {
	t.Helper()
	ix, err := Open(built.Index, built.Format, int64(len(blob)))
	if err != nil {
		t.Fatalf("an index just built does not parse: %v", err)
	}
	defer ix.Close()
	tr := tar.NewReader(tarStream)
	src := sourceOf(built, blob)
	for i := range ix.Entries() {
		e := &ix.Entries()[i]
		h, err := tr.Next()
		if err != nil {
			return // the index may list what a strict reader refuses
		}
		if !e.IsReg() || h.Name != e.Name {
			continue
		}
		want, _ := io.ReadAll(tr)
		got := make([]byte, e.Size)
		n, err := ix.ReadAt(context.Background(), src, e, got, 0)
		if err != nil && err != io.EOF {
			t.Fatalf("%s: %v", e.Name, err)
		}
		if !bytes.Equal(got[:n], want) {
			t.Fatalf("%s: read %d bytes that differ from the tar's %d", e.Name, n, len(want))
		}
	}
}

// FuzzParse: any bytes either fail to parse as a zTOC, split or not, or
// give an index whose reads stay within the blob and its windows.
func FuzzParse(f *testing.F) {
	path, blob := testLayer(f, true, sampleFiles())
	split, _ := buildZ(f, path, true, false, 64<<10)
	inline, _ := buildZ(f, path, true, true, 64<<10)
	f.Add(split.Index, true)
	f.Add(inline.Index, false)
	src := sourceOf(split, blob)
	f.Fuzz(func(t *testing.T, data []byte, isSplit bool) {
		format := FormatZTOC
		if isSplit {
			format = FormatZTOCSplit
		}
		ix, err := Open(data, format, int64(len(blob)))
		if err != nil {
			return
		}
		defer ix.Close()
		p := make([]byte, 4096)
		for i := range ix.Entries() {
			_, _ = ix.ReadAt(context.Background(), src, &ix.Entries()[i], p, 0)
		}
	})
}

// TestBadLayersGetNoIndex: a truncated gzip stream, and bytes that are no
// tar at all, are refused when indexing, so the image works without an
// index instead of with a wrong one.
func TestBadLayersGetNoIndex(t *testing.T) {
	_, blob := testLayer(t, true, sampleFiles())
	for name, data := range map[string][]byte{
		"truncated gzip": blob[:len(blob)/2],
		"not gzip":       []byte("plain text, not a layer"),
	} {
		p := filepath.Join(t.TempDir(), "layer")
		os.WriteFile(p, data, 0o644)
		if _, err := Build(p, ocispec.MediaTypeImageLayerGzip, BuildOptions{SpanSize: 64 << 10}); err == nil {
			t.Errorf("%s: indexed", name)
		}
	}
}
