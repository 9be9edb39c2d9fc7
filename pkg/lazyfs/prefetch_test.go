package lazyfs

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/internal/testenv"
	"github.com/shoal-ipfs/shoal/internal/testimage"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/store/memstore"
)

func TestRecorderListsFilesInFirstReadOrderWithMergedRanges(t *testing.T) {
	r := NewRecorder()
	r.note("bin/sh", 0, 4096)
	r.note("etc/ld.so.cache", 0, 100)
	r.note("bin/sh", 4096, 4096)    // sequential: extends
	r.note("bin/sh", 100000, 10)    // a jump: a new range
	r.note("bin/sh", 2000, 3000)    // inside the first
	r.note("bin/sh", 99990, 20)     // overlaps the jump, read later
	r.note("etc/ld.so.cache", 0, 0) // nothing read
	got := r.List()
	want := &PrefetchList{Files: []PrefetchFile{
		{Path: "bin/sh", Ranges: [][2]int64{{0, 8192}, {99990, 20}}},
		{Path: "etc/ld.so.cache", Ranges: [][2]int64{{0, 100}}},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func FuzzParsePrefetchList(f *testing.F) {
	f.Add([]byte(`{"files":[{"path":"bin/sh","ranges":[[0,4096]]}]}`))
	f.Add([]byte(`{"files":[{"path":"../x","ranges":[[0,1]]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := ParsePrefetchList(data)
		if err != nil {
			return
		}
		for _, file := range l.Files {
			if _, ok := cleanName(file.Path); !ok {
				t.Fatalf("accepted path %q", file.Path)
			}
			for _, r := range file.Ranges {
				if r[0] < 0 || r[1] <= 0 {
					t.Fatalf("accepted range %v", r)
				}
			}
		}
	})
}

// FetchAhead reads the image's prefetch list and fetches its spans, then
// the rest of the image at the rate given, and says so.
func TestFetchAheadPrefetchesThenFetchesTheRest(t *testing.T) {
	ctx := context.Background()
	store := memstore.New()
	img := testimage.FromLayers(t, []testimage.File{
		{Header: tar.Header{Name: "etc/os-release", Typeflag: tar.TypeReg}, Body: "NAME=shoal\n"},
		{Header: tar.Header{Name: "bin/app", Typeflag: tar.TypeReg}, Body: strings.Repeat("app", 100000)},
	})
	dir := t.TempDir()
	if err := testimage.WriteLayout(dir, "v1", img); err != nil {
		t.Fatal(err)
	}
	list, err := store.Add(ctx, strings.NewReader(`{"files":[{"path":"etc/os-release"},{"path":"bin/app","ranges":[[0,4096]]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	res := testimage.Push(ctx, t, store, dir, image.PushOptions{Index: true, Attach: map[string]cid.Cid{AnnotationPrefetch: list}})
	im, err := OpenImage(ctx, store, res.Root, ocispec.Platform{OS: "linux", Architecture: "amd64"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	var said []string
	im.FetchAhead(ctx, store, 1<<30, func(format string, args ...any) { said = append(said, fmt.Sprintf(format, args...)) })
	if len(said) != 2 || !strings.HasPrefix(said[0], "prefetched 2 files: ") || said[1] != "the whole image is stored here now" {
		t.Fatalf("FetchAhead said %q", said)
	}
}

// Serve serves the image until its context ends, then unmounts, and
// fetches ahead meanwhile.
func TestServeUntilTheContextEnds(t *testing.T) {
	testenv.FUSE(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := memstore.New()
	img := testimage.FromLayers(t, []testimage.File{
		{Header: tar.Header{Name: "etc/os-release", Typeflag: tar.TypeReg}, Body: "NAME=shoal\n"},
	})
	layout := t.TempDir()
	if err := testimage.WriteLayout(layout, "v1", img); err != nil {
		t.Fatal(err)
	}
	res := testimage.Push(ctx, t, store, layout, image.PushOptions{Index: true})
	im, err := OpenImage(ctx, store, res.Root, ocispec.Platform{OS: "linux", Architecture: "amd64"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	dir := t.TempDir()
	mounted := make(chan struct{})
	said := make(chan string, 4)
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, dir, im, store, ServeOptions{
			MountOptions: MountOptions{Name: "shoal:test"},
			Rate:         1 << 30,
			Report:       func(format string, args ...any) { said <- fmt.Sprintf(format, args...) },
			Mounted:      func() { close(mounted) },
		})
	}()
	select {
	case <-mounted:
	case err := <-served:
		t.Fatalf("Serve: %v", err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "etc", "os-release"))
	if err != nil || string(data) != "NAME=shoal\n" {
		t.Fatalf("read through the mount: %q, %v", data, err)
	}
	if got := <-said; got != "the whole image is stored here now" {
		t.Fatalf("fetching ahead said %q", got)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "etc")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after Serve returned, the mount point shows %v", err)
	}
}
