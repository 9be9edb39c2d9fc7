package layerindex

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"

	"github.com/awslabs/soci-snapshotter/ztoc"
	"github.com/awslabs/soci-snapshotter/ztoc/compression"
	"github.com/containerd/stargz-snapshotter/estargz"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// mixedTar is a tar of files of random and of compressible bytes, a few
// MB: gzip makes blocks of every kind of it.
func mixedTar(t testing.TB) []byte {
	t.Helper()
	rng := rand.New(rand.NewSource(5))
	var files []file
	for i := range 120 {
		data := make([]byte, rng.Intn(60000))
		rng.Read(data)
		if i%3 != 0 {
			for j, b := range data {
				data[j] = "abcdefgh \n"[b%10]
			}
		}
		f := sampleFiles()[1]
		f.hdr.Name, f.data = fmt.Sprintf("f%d", i), data
		files = append(files, f)
	}
	p, _ := testLayer(t, false, files)
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// gzipLayers are gzip encodings of tar to index: at several levels, and
// in two members (as pigz and others write), in files.
func gzipLayers(t testing.TB, tar []byte) map[string]string {
	t.Helper()
	dir := t.TempDir()
	out := map[string]string{}
	levels := []int{gzip.BestSpeed, gzip.DefaultCompression, gzip.BestCompression}
	if testing.Short() {
		levels = levels[1:2]
	}
	for _, level := range levels {
		for _, members := range []int{1, 2} {
			var z bytes.Buffer
			for i := range members {
				zw, _ := gzip.NewWriterLevel(&z, level)
				zw.Write(tar[i*len(tar)/members : (i+1)*len(tar)/members])
				zw.Close()
			}
			name := fmt.Sprintf("level %d, %d members", level, members)
			p := filepath.Join(dir, fmt.Sprint(level, members))
			if err := os.WriteFile(p, z.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			out[name] = p
		}
	}
	return out
}

// The checkpoints are soci's: an index built by shoal is the same bytes
// as one whose checkpoints soci's zinfo took, so a layer indexed by any
// shoal, or by soci, has one index and an image one root CID.
func TestCheckpointsAreSocis(t *testing.T) {
	for name, path := range gzipLayers(t, mixedTar(t)) {
		for _, span := range []int64{64 << 10, DefaultInlineSpanSize} {
			t.Run(fmt.Sprintf("%s, span %d", name, span), func(t *testing.T) {
				zi, err := compression.NewZinfoFromFile(compression.Gzip, path, span)
				if err != nil {
					t.Fatal(err)
				}
				defer zi.Close()
				want, err := zi.Bytes()
				if err != nil {
					t.Fatal(err)
				}
				built, err := Build(path, ocispec.MediaTypeImageLayerGzip, BuildOptions{SpanSize: span, Inline: true})
				if err != nil {
					t.Fatal(err)
				}
				raw, err := inflateIndex(built.Index)
				if err != nil {
					t.Fatal(err)
				}
				zt, err := ztoc.Unmarshal(bytes.NewReader(raw))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(zt.Checkpoints, want) {
					t.Fatalf("checkpoints differ from soci's: %d bytes, soci %d", len(zt.Checkpoints), len(want))
				}
				if int(zt.MaxSpanID) != int(zi.MaxSpanID()) {
					t.Fatalf("%d spans, soci %d", zt.MaxSpanID+1, zi.MaxSpanID()+1)
				}
			})
		}
	}
}

// A layer indexed as it streams in, in reads of any size, gets the index
// a file of it gets.
func TestBuildFromAStreamIsBuildOfTheFile(t *testing.T) {
	tarBytes := mixedTar(t)
	layers := gzipLayers(t, tarBytes)
	layers["uncompressed"] = filepath.Join(t.TempDir(), "tar")
	os.WriteFile(layers["uncompressed"], tarBytes, 0o644)
	for name, path := range layers {
		mt := ocispec.MediaTypeImageLayerGzip
		if name == "uncompressed" {
			mt = ocispec.MediaTypeImageLayer
		}
		for _, o := range []BuildOptions{{}, {Inline: true}, {SpanSize: 100_000}} {
			t.Run(fmt.Sprintf("%s %+v", name, o), func(t *testing.T) {
				want, err := Build(path, mt, o)
				if err != nil {
					t.Fatal(err)
				}
				defer want.Windows.Close()
				blob, _ := os.ReadFile(path)
				wholeCalled := false
				whole := func() (io.ReaderAt, error) { wholeCalled = true; return bytes.NewReader(blob), nil }
				head := min(len(blob), 20_000) // a byte at a time: slow
				oneByte := io.MultiReader(iotest.OneByteReader(bytes.NewReader(blob[:head])), bytes.NewReader(blob[head:]))
				for _, r := range []io.Reader{oneByte, iotest.HalfReader(bytes.NewReader(blob))} {
					got, err := BuildFrom(r, mt, int64(len(blob)), o, whole)
					if err != nil {
						t.Fatal(err)
					}
					defer got.Windows.Close()
					if got.Format != want.Format || !bytes.Equal(got.Index, want.Index) || !bytes.Equal(bytes.Join(windowsOf(got), nil), bytes.Join(windowsOf(want), nil)) {
						t.Fatal("the index of the stream differs from the file's")
					}
				}
				if wholeCalled {
					t.Error("a layer without a TOC of its own was read whole again")
				}
			})
		}
	}
}

// An eStargz layer, indexed as it streams in, is indexed by its own TOC,
// read from the whole layer once the stream has ended.
func TestBuildFromFindsAnEStargzTOC(t *testing.T) {
	path, _ := testLayer(t, false, sampleFiles())
	f, _ := os.Open(path)
	defer f.Close()
	fi, _ := f.Stat()
	blob, err := estargz.Build(io.NewSectionReader(f, 0, fi.Size()))
	if err != nil {
		t.Fatal(err)
	}
	defer blob.Close()
	data, _ := io.ReadAll(blob)
	streamEnded := false
	r := &endSignal{r: bytes.NewReader(data), ended: &streamEnded}
	whole := func() (io.ReaderAt, error) {
		if !streamEnded {
			t.Error("the layer was read whole before its stream ended")
		}
		return bytes.NewReader(data), nil
	}
	built, err := BuildFrom(r, ocispec.MediaTypeImageLayerGzip, int64(len(data)), BuildOptions{}, whole)
	if err != nil {
		t.Fatal(err)
	}
	if built.Format != FormatEStargz {
		t.Fatalf("format %s, want %s", built.Format, FormatEStargz)
	}
}

type endSignal struct {
	r     io.Reader
	ended *bool
}

func (e *endSignal) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		*e.ended = true
	}
	return n, err
}

// A stream that fails fails the build, whatever the layer.
func TestBuildFromFailsWithItsStream(t *testing.T) {
	broken := errors.New("the add failed")
	for name, path := range gzipLayers(t, mixedTar(t)) {
		blob, _ := os.ReadFile(path)
		r := io.MultiReader(bytes.NewReader(blob[:len(blob)/2]), iotest.ErrReader(broken))
		_, err := BuildFrom(r, ocispec.MediaTypeImageLayerGzip, int64(len(blob)), BuildOptions{}, nil)
		if !errors.Is(err, broken) {
			t.Errorf("%s: %v, want the stream's error", name, err)
		}
	}
}

// FuzzBuildGzip: whatever bytes a gzip layer holds, building its index
// either fails or gives an index whose files read back as a gzip and tar
// reader gives them.
func FuzzBuildGzip(f *testing.F) {
	_, blob := testLayer(f, true, sampleFiles()[:2])
	f.Add(blob)
	f.Add(append(append([]byte(nil), blob...), blob...))
	f.Add(blob[:len(blob)/2])
	f.Fuzz(func(t *testing.T, blob []byte) {
		built, err := BuildFrom(bytes.NewReader(blob), ocispec.MediaTypeImageLayerGzip, int64(len(blob)), BuildOptions{SpanSize: 4096},
			func() (io.ReaderAt, error) { return bytes.NewReader(blob), nil })
		if err != nil {
			return
		}
		defer built.Windows.Close()
		zr, err := gzip.NewReader(bytes.NewReader(blob))
		if err != nil {
			t.Fatalf("indexed what gzip refuses: %v", err)
		}
		readsAsTar(t, built, blob, zr)
	})
}
