package transport_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"math"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/internal/testimage"
	"github.com/shoal-ipfs/shoal/pkg/transport"
)

// readAll opens every blob under the source's root and checks it.
func readAll(t *testing.T, src transport.Source) int {
	t.Helper()
	ctx := context.Background()
	root, err := src.Root(ctx)
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	var visit func(d ocispec.Descriptor)
	visit = func(d ocispec.Descriptor) {
		rc, err := src.Open(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		data, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		if err := transport.VerifyReader(strings.NewReader(string(data)), d); err != nil {
			t.Fatal(err)
		}
		count++
		if !transport.IsIndex(d.MediaType) && !transport.IsManifest(d.MediaType) {
			return
		}
		var doc struct {
			Manifests []ocispec.Descriptor
			Config    *ocispec.Descriptor
			Layers    []ocispec.Descriptor
		}
		if err := jsonUnmarshal(data, &doc); err != nil {
			t.Fatal(err)
		}
		for _, m := range doc.Manifests {
			visit(m)
		}
		if doc.Config != nil {
			visit(*doc.Config)
		}
		for _, l := range doc.Layers {
			visit(l)
		}
	}
	visit(root)
	return count
}

func TestRegistrySource(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	idx, err := testimage.Index(5, 100<<10, 10<<10)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(host+"/test/app:1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	src, err := transport.OpenSource(context.Background(), "docker://"+host+"/test/app:1", transport.SourceOptions{PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if n := readAll(t, src); n != 1+2*4 {
		t.Fatalf("read %d blobs from the registry, want 9", n)
	}
}

func TestDockerArchiveSource(t *testing.T) {
	img, err := testimage.Image(6, testimage.Platforms[0], 50<<10, 20<<10)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "saved.tar")
	tag, _ := name.NewTag("example.com/saved:1")
	if err := tarball.WriteToFile(file, tag, img); err != nil {
		t.Fatal(err)
	}
	src, err := transport.OpenSource(context.Background(), "docker-archive:"+file, transport.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if n := readAll(t, src); n != 4 {
		t.Fatalf("read %d blobs from the archive, want 4", n)
	}
}

func TestOCIArchiveRoundTrip(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	idx, err := testimage.Index(8, 30<<10)
	if err != nil {
		t.Fatal(err)
	}
	if err := testimage.WriteLayout(dir, "v1", idx); err != nil {
		t.Fatal(err)
	}
	src, err := transport.OpenSource(ctx, "oci:"+dir+":v1", transport.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	file := filepath.Join(t.TempDir(), "out.tar")
	dst, err := transport.OpenDestination("oci-archive:" + file + ":copy")
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	root, _ := src.Root(ctx)
	copyAll(t, src, dst, root)
	if _, err := os.Stat(file); err == nil {
		t.Fatal("archive visible before commit")
	}
	if err := dst.Commit(ctx, root); err != nil {
		t.Fatal(err)
	}
	back, err := transport.OpenSource(ctx, "oci-archive:"+file+":copy", transport.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if n := readAll(t, back); n != 1+2*3 {
		t.Fatalf("read %d blobs back, want 7", n)
	}
}

func copyAll(t *testing.T, src transport.Source, dst transport.Destination, d ocispec.Descriptor) {
	t.Helper()
	ctx := context.Background()
	rc, err := src.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(rc)
	rc.Close()
	if err := dst.WriteBlob(ctx, d, strings.NewReader(string(data))); err != nil {
		t.Fatal(err)
	}
	if !transport.IsIndex(d.MediaType) && !transport.IsManifest(d.MediaType) {
		return
	}
	var doc struct {
		Manifests []ocispec.Descriptor
		Config    *ocispec.Descriptor
		Layers    []ocispec.Descriptor
	}
	_ = jsonUnmarshal(data, &doc)
	for _, m := range doc.Manifests {
		copyAll(t, src, dst, m)
	}
	if doc.Config != nil {
		copyAll(t, src, dst, *doc.Config)
		for _, l := range doc.Layers {
			copyAll(t, src, dst, l)
		}
	}
}

func TestWriteBlobRejectsWrongBytes(t *testing.T) {
	dir := t.TempDir()
	dst, err := transport.OpenDestination("oci:" + dir)
	if err != nil {
		t.Fatal(err)
	}
	d := ocispec.Descriptor{Digest: "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", Size: 0}
	err = dst.WriteBlob(context.Background(), d, strings.NewReader("not empty"))
	if !errors.Is(err, transport.ErrDigestMismatch) {
		t.Fatalf("WriteBlob of wrong bytes: %v", err)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "blobs", "sha256", "*"))
	if len(left) != 0 {
		t.Fatalf("rejected blob left %v", left)
	}
}

func TestArchiveRefusesEscapingEntries(t *testing.T) {
	f := filepath.Join(t.TempDir(), "evil.tar")
	w, _ := os.Create(f)
	writeTar(t, w, map[string]string{"../evil": "x"})
	w.Close()
	_, err := transport.OpenSource(context.Background(), "oci-archive:"+f, transport.SourceOptions{})
	if !errors.Is(err, transport.ErrInvalidLayout) {
		t.Fatalf("escaping archive: %v", err)
	}
}

// VerifyReader takes the blob its descriptor names and nothing else:
// small or large, a byte more, a byte less or a byte changed fails it.
func TestVerifyReaderChecksSizeAndDigest(t *testing.T) {
	for _, size := range []int{0, 1, 403, 1<<20 + 3} {
		blob := bytes.Repeat([]byte("shoal"), size/5+1)[:size]
		d := ocispec.Descriptor{Digest: digest.FromBytes(blob), Size: int64(size)}
		if err := transport.VerifyReader(bytes.NewReader(blob), d); err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
		changed := append([]byte(nil), blob...)
		if size > 0 {
			changed[size/2] ^= 1
		}
		for name, data := range map[string][]byte{
			"a byte more": append(append([]byte(nil), blob...), 'x'),
			"a byte less": blob[:max(size-1, 0)],
			"one changed": changed,
		} {
			if size == 0 && name != "a byte more" {
				continue
			}
			if err := transport.VerifyReader(bytes.NewReader(data), d); !errors.Is(err, transport.ErrDigestMismatch) {
				t.Errorf("%d bytes, %s: %v, want ErrDigestMismatch", size, name, err)
			}
		}
	}
	// A descriptor's size comes from whoever wrote it.
	for _, size := range []int64{-1, math.MaxInt64} {
		d := ocispec.Descriptor{Digest: digest.FromString("x"), Size: size}
		if err := transport.VerifyReader(strings.NewReader("x"), d); !errors.Is(err, transport.ErrDigestMismatch) {
			t.Errorf("a descriptor of %d bytes: %v, want ErrDigestMismatch", size, err)
		}
	}
}
