package image

import (
	"context"
	"io"

	"github.com/ipfs/go-cid"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/pkg/layerindex"
	"github.com/shoal-ipfs/shoal/pkg/store"
)

// layerIndexing builds a layer's index from the bytes a push adds, as it
// adds them: the index (one inflate of the whole layer, the longest step
// of a push) runs on the push's other core and takes about as long as the
// add, not as long again after it. The bytes are handed over in memory,
// a few chunks at most in flight, so the add waits for an index that
// falls behind rather than the push keeping a copy of the layer.
type layerIndexing struct {
	chunks chan []byte
	free   chan []byte
	quit   chan struct{} // closed once the build reads no more
	added  chan struct{} // closed once the add has ended
	// set before added is closed: why the add ended early, or the blob
	addErr error
	blob   cid.Cid

	built   *layerindex.Built
	err     error
	indexed chan struct{}
}

const indexingChunks = 8

// startIndexing starts indexing layer l, whose bytes the push writes to
// the returned layerIndexing, until ctx is done; an eStargz layer's TOC
// is read from the blob in store once it is added.
func startIndexing(ctx context.Context, st Store, l ocispec.Descriptor, o layerindex.BuildOptions) *layerIndexing {
	x := &layerIndexing{
		chunks:  make(chan []byte, indexingChunks),
		free:    make(chan []byte, indexingChunks+1),
		quit:    make(chan struct{}),
		added:   make(chan struct{}),
		indexed: make(chan struct{}),
	}
	go func() {
		defer close(x.indexed)
		defer close(x.quit)
		whole := func() (io.ReaderAt, error) {
			select {
			case <-x.added:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if x.addErr != nil {
				return nil, x.addErr
			}
			return store.BlobAt(ctx, st, x.blob), nil
		}
		x.built, x.err = layerindex.BuildFrom(&indexingReader{x: x, ctx: ctx}, l.MediaType, l.Size, o, whole)
	}()
	return x
}

// Write hands a copy of p to the build, or drops it once the build has
// stopped reading (the layer is not a tar stream, say).
func (x *layerIndexing) Write(p []byte) (int, error) {
	var buf []byte
	select {
	case buf = <-x.free:
	default:
	}
	buf = append(buf[:0], p...)
	select {
	case x.chunks <- buf:
	case <-x.quit:
	}
	return len(p), nil
}

// end says the add is over: it stored blob c, or failed with err, which
// fails the build too; end then waits for the build to stop.
func (x *layerIndexing) end(c cid.Cid, err error) {
	x.blob, x.addErr = c, err
	close(x.added)
	close(x.chunks)
	if err != nil {
		<-x.indexed
	}
}

// index waits for the layer's index.
func (x *layerIndexing) index() (*layerindex.Built, error) {
	<-x.indexed
	return x.built, x.err
}

// indexingReader reads what the add hands to a layerIndexing.
type indexingReader struct {
	x   *layerIndexing
	ctx context.Context
	cur []byte
	buf []byte
}

func (r *indexingReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.buf != nil {
			select {
			case r.x.free <- r.buf:
			default:
			}
			r.buf = nil
		}
		var ok bool
		select {
		case r.buf, ok = <-r.x.chunks:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
		if !ok {
			<-r.x.added
			if r.x.addErr != nil {
				return 0, r.x.addErr
			}
			return 0, io.EOF
		}
		r.cur = r.buf
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}
