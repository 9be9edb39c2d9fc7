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
	"github.com/shoal-ipfs/shoal/pkg/transport"
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
	ctx, kick, stop := image.IdleTimeout(ctx, max(timeout, DefaultReadTimeout))
	defer stop()
	rc, err := store.Cat(ctx, bc)
	if err != nil {
		return nil, fmt.Errorf("layer %s (no index, fetched whole): %w", l.Digest, err)
	}
	defer rc.Close()
	blob, err := transport.NewVerifier(&kickReader{r: rc, kick: kick}, l)
	if err != nil {
		return nil, err
	}
	tr, err := layerindex.Uncompress(blob, l.MediaType, wholeTarBound(l.Size))
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
		// The bytes after the stream count for the size and digest,
		// which the verifier checks at the blob's end.
		_, err = io.Copy(io.Discard, blob)
	}
	if err != nil {
		return nil, fmt.Errorf("layer %s (no index, fetched whole): %w", l.Digest, err)
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

// wholeTarBound bounds the tar a layer fetched whole unpacks to, which
// goes to a temporary file: layerindex's bound, the same as indexing the
// layer has.
var wholeTarBound = layerindex.MaxTarSize

// kickReader calls kick after every read that returns bytes.
type kickReader struct {
	r    io.Reader
	kick func()
}

func (k *kickReader) Read(b []byte) (int, error) {
	n, err := k.r.Read(b)
	if n > 0 {
		k.kick()
	}
	return n, err
}
