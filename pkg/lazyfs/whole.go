package lazyfs

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/layerindex"
)

// openWholeLayer opens a layer that has no index by fetching it whole:
// a plain zstd layer, whose single frame cannot be read from the middle,
// or a layer of an image pushed without indexes (by nerdctl, say). The
// blob is checked against its digest and unpacked to a temporary tar
// file, unlinked once open, which an index built here reads. So every
// image mounts; only indexed layers mount lazily.
func openWholeLayer(ctx context.Context, store Store, l ocispec.Descriptor, timeout time.Duration) (*indexedLayer, error) {
	bc, err := image.CIDOf(l)
	if err != nil {
		return nil, err
	}
	// The whole blob may take long to come; a blob whose bytes stop
	// coming (or never start) fails as a read of a vanished peer does.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	idle := max(timeout, DefaultReadTimeout)
	stall := time.AfterFunc(idle, cancel)
	defer stall.Stop()
	rc, err := store.Cat(ctx, bc)
	if err != nil {
		return nil, fmt.Errorf("layer %s (no index, fetched whole): %w", l.Digest, err)
	}
	defer rc.Close()
	verifier := l.Digest.Verifier()
	blob := io.TeeReader(&progressReader{r: rc, progress: func() { stall.Reset(idle) }}, verifier)
	tr, err := layerindex.Uncompress(blob, l.MediaType)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", l.Digest, err)
	}
	defer tr.Close()
	f, err := os.CreateTemp("", "shoal-layer-*.tar")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	keep := false
	defer func() {
		if !keep {
			f.Close()
		}
	}()
	size, err := io.Copy(f, tr)
	if err == nil {
		_, err = io.Copy(io.Discard, blob) // the bytes after the stream count for the digest
	}
	if err != nil {
		return nil, fmt.Errorf("layer %s (no index, fetched whole): %w", l.Digest, err)
	}
	if !verifier.Verified() {
		return nil, fmt.Errorf("layer %s: its bytes do not match the digest", l.Digest)
	}
	built, err := layerindex.Build(f.Name(), ocispec.MediaTypeImageLayer, layerindex.BuildOptions{})
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", l.Digest, err)
	}
	ix, err := layerindex.Open(built.Index, built.Format, size)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", l.Digest, err)
	}
	keep = true
	il := &indexedLayer{ix: ix, store: store, blob: bc, local: f, fetchedWhole: l.Size, readTimeout: DefaultReadTimeout}
	il.ahead, il.stopAhead = context.WithCancel(context.WithoutCancel(ctx))
	return il, nil
}

// progressReader calls progress after every read that returns bytes.
type progressReader struct {
	r        io.Reader
	progress func()
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.progress()
	}
	return n, err
}
