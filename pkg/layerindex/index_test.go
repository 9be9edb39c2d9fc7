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

func TestIndexReadsAnyRangeOfAnyFile(t *testing.T) {
	for _, gz := range []bool{true, false} {
		mt := ocispec.MediaTypeImageLayer
		if gz {
			mt = ocispec.MediaTypeImageLayerGzip
		}
		files := sampleFiles()
		path, blob := testLayer(t, gz, files)
		data, _, err := Build(path, mt, 64<<10)
		if err != nil {
			t.Fatal(err)
		}
		ix, err := Parse(data, int64(len(blob)))
		if err != nil {
			t.Fatal(err)
		}
		defer ix.Close()
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
		r := rand.New(rand.NewSource(2))
		for range 50 {
			off := r.Int63n(int64(len(want)))
			p := make([]byte, r.Intn(200_000)+1)
			n, err := ix.ReadAt(context.Background(), bytes.NewReader(blob), big, p, off)
			if err != nil && err != io.EOF {
				t.Fatal(err)
			}
			if !bytes.Equal(p[:n], want[off:off+int64(n)]) || (err == nil && n != len(p)) {
				t.Fatalf("gzip %v: read %d at %d: wrong bytes (n=%d, err=%v)", gz, len(p), off, n, err)
			}
		}
	}
}

func TestIndexOfAnotherBlobIsRefused(t *testing.T) {
	path, blob := testLayer(t, true, sampleFiles())
	data, _, err := Build(path, ocispec.MediaTypeImageLayerGzip, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(data, int64(len(blob))+1); err == nil {
		t.Error("an index for a blob of another size was accepted")
	}
	ix, err := Parse(data, int64(len(blob)))
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	other := bytes.Clone(blob)
	other[len(other)/2] ^= 0xff
	p := make([]byte, 100)
	e := &ix.Entries()[2]
	for off := int64(0); off < e.Size; off += 64 << 10 {
		if _, err := ix.ReadAt(context.Background(), bytes.NewReader(other), e, p, off); err != nil {
			return // caught
		}
	}
	t.Fatal("every read of a changed blob succeeded")
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
		data, _, err := Build(p, ocispec.MediaTypeImageLayer, 4096)
		if err != nil {
			return
		}
		ix, err := Parse(data, int64(len(blob)))
		if err != nil {
			t.Fatalf("an index just built does not parse: %v", err)
		}
		defer ix.Close()
		tr := tar.NewReader(bytes.NewReader(blob))
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
			n, err := ix.ReadAt(context.Background(), bytes.NewReader(blob), e, got, 0)
			if err != nil && err != io.EOF {
				t.Fatalf("%s: %v", e.Name, err)
			}
			if !bytes.Equal(got[:n], want) {
				t.Fatalf("%s: read %d bytes that differ from the tar's %d", e.Name, n, len(want))
			}
		}
	})
}

// FuzzParse: any bytes either fail to parse or give an index whose reads
// stay within the blob.
func FuzzParse(f *testing.F) {
	path, blob := testLayer(f, true, sampleFiles())
	data, _, err := Build(path, ocispec.MediaTypeImageLayerGzip, 64<<10)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Fuzz(func(t *testing.T, data []byte) {
		ix, err := Parse(data, int64(len(blob)))
		if err != nil {
			return
		}
		defer ix.Close()
		p := make([]byte, 4096)
		for i := range ix.Entries() {
			_, _ = ix.ReadAt(context.Background(), bytes.NewReader(blob), &ix.Entries()[i], p, 0)
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
		if _, _, err := Build(p, ocispec.MediaTypeImageLayerGzip, 64<<10); err == nil {
			t.Errorf("%s: indexed", name)
		}
	}
}
