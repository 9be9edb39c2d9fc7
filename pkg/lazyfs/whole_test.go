package lazyfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/internal/testimage"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/layerindex"
	"github.com/shoal-ipfs/shoal/pkg/store/memstore"
)

// TestLayerWithoutIndexIsFetchedWhole: an image whose top layer is plain
// zstd (no index can be built for it) mounts: that layer is fetched whole,
// the gzip one below stays lazy, and the merged tree reads both right.
func TestLayerWithoutIndexIsFetchedWhole(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	layer := func(comp compression.Compression, files map[string]string) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for name, body := range files {
			tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))})
			io.WriteString(tw, body)
		}
		tw.Close()
		return buf.Bytes()
	}
	img := empty.Image
	for _, l := range []struct {
		comp  compression.Compression
		mt    types.MediaType
		files map[string]string
	}{
		{compression.GZip, types.OCILayer, map[string]string{"etc/base": "from the gzip layer", "etc/over": "hidden"}},
		{compression.ZStd, types.OCILayerZStd, map[string]string{"etc/top": "from the zstd layer", "etc/over": "the zstd layer wins"}},
	} {
		data := layer(l.comp, l.files)
		tl, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
			tarball.WithCompression(l.comp), tarball.WithMediaType(l.mt))
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, tl); err != nil {
			t.Fatal(err)
		}
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	img, _ = mutate.ConfigFile(img, cf)
	dir := t.TempDir()
	if err := testimage.WriteLayout(dir, "v1", img); err != nil {
		t.Fatal(err)
	}
	n := memstore.New()
	res := testimage.Push(ctx, t, n, dir, image.PushOptions{Index: true})

	im, err := OpenImage(ctx, n, res.Root, ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if len(im.FetchedWhole) != 1 || im.FetchedWhole[0].MediaType != string(types.OCILayerZStd) || im.FetchedWhole[0].Annotations[layerindex.AnnotationIndex] != "" {
		t.Fatalf("fetched whole: %v; want the zstd layer alone", im.FetchedWhole)
	}
	if got := im.Stats.SpanBytes.Load(); got != im.FetchedWhole[0].Size {
		t.Errorf("counted %d bytes fetched, want the zstd layer's %d", got, im.FetchedWhole[0].Size)
	}
	for name, want := range map[string]string{
		"etc/base": "from the gzip layer",
		"etc/top":  "from the zstd layer",
		"etc/over": "the zstd layer wins",
	} {
		nd := im.Tree.lookup(name)
		if nd == nil || nd.layer == nil {
			t.Fatalf("%s: not in the tree", name)
		}
		p := make([]byte, 64)
		k, err := nd.layer.ReadAt(ctx, &nd.entry, p, 0)
		if err != nil && err != io.EOF || string(p[:k]) != want {
			t.Errorf("%s: %q (%v), want %q", name, p[:k], err, want)
		}
	}
}

// TestWholeLayerPastTheBoundIsRefused: a layer without an index whose
// tar inflates past the bound is refused, not unpacked to a temporary
// file of whatever size it inflates to.
func TestWholeLayerPastTheBoundIsRefused(t *testing.T) {
	ctx := t.Context()
	var tarball bytes.Buffer
	tw := tar.NewWriter(&tarball)
	tw.WriteHeader(&tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: 4 << 20})
	tw.Write(make([]byte, 4<<20))
	tw.Close()
	var blob bytes.Buffer
	zw, _ := zstd.NewWriter(&blob)
	zw.Write(tarball.Bytes())
	zw.Close()
	n := memstore.New()
	l := testimage.AddBlob(t, n, ocispec.MediaTypeImageLayerZstd, blob.Bytes(), digest.FromBytes(blob.Bytes()))

	il, err := openWholeLayer(ctx, n, l, time.Minute)
	if err != nil {
		t.Fatalf("within the bound: %v", err)
	}
	il.close()
	defer func(bound func(int64) int64) { wholeTarBound = bound }(wholeTarBound)
	wholeTarBound = func(int64) int64 { return 1 << 20 }
	if _, err := openWholeLayer(ctx, n, l, time.Minute); !errors.Is(err, layerindex.ErrInflatesPastBound) {
		t.Errorf("a %d-byte layer of a %d-byte tar, bound at 1 MiB: %v", blob.Len(), tarball.Len(), err)
	}
}
