// Package testimage writes small, real OCI images for tests.
package testimage

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/transport"
)

// Platforms of the multi-platform test image.
var Platforms = []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64", Variant: "v8"}}

// Image returns an image of the platform with the given gzip layers,
// deterministic for a seed. Layer 0 is shared by every image of a seed, as
// a base layer is.
func Image(seed int64, p v1.Platform, layerSizes ...int64) (v1.Image, error) {
	img := empty.Image
	for i, size := range layerSizes {
		s := seed*1000 + int64(i)
		if i > 0 {
			s += int64(crc32.ChecksumIEEE([]byte(p.Architecture+p.Variant))%997) * 100
		}
		l, err := random.Layer(size, types.OCILayer, random.WithSource(rand.NewSource(s)))
		if err != nil {
			return nil, err
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			return nil, err
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	return mutate.MediaType(mutate.ConfigMediaType(img, types.OCIConfigJSON), types.OCIManifestSchema1), nil
}

// Index returns a multi-platform index of Platforms, each image with the
// given layers.
func Index(seed int64, layerSizes ...int64) (v1.ImageIndex, error) {
	var adds []mutate.IndexAddendum
	for _, p := range Platforms {
		img, err := Image(seed, p, layerSizes...)
		if err != nil {
			return nil, err
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	return mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex), nil
}

// WriteLayout writes an image or index into an OCI layout at dir, tagged.
func WriteLayout(dir, tag string, v any) error {
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		p, err = layout.FromPath(dir)
		if err != nil {
			return err
		}
	}
	opt := layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag})
	switch x := v.(type) {
	case v1.Image:
		return p.AppendImage(x, opt)
	case v1.ImageIndex:
		return p.AppendIndex(x, opt)
	default:
		return fmt.Errorf("testimage: cannot write %T", v)
	}
}

// IndexLayout writes Index(seed, layerSizes...) into a new layout under
// tb's temporary directory, tagged v1, and returns the layout's path.
func IndexLayout(tb testing.TB, seed int64, layerSizes ...int64) string {
	tb.Helper()
	dir := tb.TempDir()
	idx, err := Index(seed, layerSizes...)
	if err != nil {
		tb.Fatal(err)
	}
	if err := WriteLayout(dir, "v1", idx); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// Push pushes the layout at dir (tag v1) into store.
func Push(ctx context.Context, tb testing.TB, store image.Store, dir string, opts image.PushOptions) image.Result {
	tb.Helper()
	src, err := transport.OpenSource(ctx, "oci:"+dir+":v1", transport.SourceOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	defer src.Close()
	res, err := image.Push(ctx, store, src, opts)
	if err != nil {
		tb.Fatal(err)
	}
	return res
}

// Validate checks every image in the OCI layout at dir with
// go-containerregistry's validator: digests, sizes, configs, layers.
func Validate(tb testing.TB, dir string) {
	tb.Helper()
	p, err := layout.FromPath(dir)
	if err != nil {
		tb.Fatal(err)
	}
	ii, err := p.ImageIndex()
	if err != nil {
		tb.Fatal(err)
	}
	if err := validate.Index(ii); err != nil {
		tb.Fatalf("layout %s does not validate: %v", dir, err)
	}
}

// File is an entry of a layer made by FromLayers: a header, and for a
// regular file its contents (the header's size is set from them).
type File struct {
	tar.Header
	Body string
}

// FromLayers is a linux/amd64 image whose gzip layers hold files, bottom
// layer first.
func FromLayers(tb testing.TB, layers ...[]File) v1.Image {
	tb.Helper()
	img := empty.Image
	for _, files := range layers {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, f := range files {
			h := f.Header
			if h.Typeflag == tar.TypeReg {
				h.Size = int64(len(f.Body))
			}
			if h.Mode == 0 && h.Typeflag != tar.TypeSymlink {
				h.Mode = 0o644
				if h.Typeflag == tar.TypeDir {
					h.Mode = 0o755
				}
			}
			if err := tw.WriteHeader(&h); err != nil {
				tb.Fatal(err)
			}
			if _, err := io.WriteString(tw, f.Body); err != nil {
				tb.Fatal(err)
			}
		}
		if err := tw.Close(); err != nil {
			tb.Fatal(err)
		}
		data := buf.Bytes()
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
		if err != nil {
			tb.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			tb.Fatal(err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		tb.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		tb.Fatal(err)
	}
	return img
}
