package blob

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"github.com/shoal-ipfs/shoal/internal/sha256x"
)

// presumBatch is how many chunks are cut and hashed at once: the lanes of
// one sha256x pass.
const presumBatch = 16

// presumSplitter cuts a blob into fixed-size chunks as boxo's size
// splitter does, but a batch at a time, hashing each batch in one
// sha256x pass. presumBuilder then makes the raw leaves' CIDs from those
// sums instead of hashing each chunk again.
type presumSplitter struct {
	r     io.Reader
	size  int
	queue [][]byte
	sums  [][sha256.Size]byte
	err   error
	// chunks, if set, is r handing out its own buffers.
	chunks ChunkReader
	ctx    context.Context
	// whole, if set, hashes every chunk into the blob's digest, and each
	// chunk's digest with it (sha256x.Stream): the batch is not hashed in
	// lanes then.
	whole *sha256x.Stream
	// last is the chunk handed out last, and its digest.
	last    []byte
	lastSum [sha256.Size]byte
}

// ChunkReader is a reader that can hand out the next n bytes in a slice
// of its own that it does not use again (fewer than n only at the end,
// io.EOF when nothing is left): the importer then keeps its leaves in
// the reader's buffers instead of copying them into new ones.
type ChunkReader interface {
	io.Reader
	Next(n int) ([]byte, error)
}

func newPresumSplitter(ctx context.Context, r io.Reader, size int) *presumSplitter {
	s := &presumSplitter{r: &ctxReader{ctx: ctx, r: r}, size: size}
	if cr, ok := r.(ChunkReader); ok {
		s.chunks, s.ctx = cr, ctx
	}
	return s
}

func (s *presumSplitter) Reader() io.Reader { return s.r }

// NextBytes returns the next chunk; the last one may be short. An empty
// blob has no chunk.
func (s *presumSplitter) NextBytes() ([]byte, error) {
	if len(s.queue) == 0 {
		if s.err != nil {
			return nil, s.err
		}
		s.fill()
		if len(s.queue) == 0 {
			return nil, s.err
		}
	}
	s.last, s.lastSum = s.queue[0], s.sums[0]
	s.queue, s.sums = s.queue[1:], s.sums[1:]
	return s.last, nil
}

// fill reads the next batch of chunks and hashes them.
func (s *presumSplitter) fill() {
	s.queue = s.queue[:0]
	if s.chunks != nil {
		s.fillFromChunks()
	} else {
		s.fillFromReader()
	}
	if cap(s.sums) < len(s.queue) {
		s.sums = make([][sha256.Size]byte, presumBatch)
	}
	s.sums = s.sums[:len(s.queue)]
	if s.whole == nil {
		sha256x.SumMany(s.queue, s.sums)
		return
	}
	for i, chunk := range s.queue {
		s.sums[i] = s.whole.Chunk(chunk)
	}
}

// fillFromReader reads a batch into a buffer of its own: the chunks live
// on in blocks after they are handed out.
func (s *presumSplitter) fillFromReader() {
	buf := make([]byte, presumBatch*s.size)
	for i := range presumBatch {
		chunk := buf[i*s.size : (i+1)*s.size : (i+1)*s.size]
		n, err := io.ReadFull(s.r, chunk)
		if n > 0 && (err == nil || errors.Is(err, io.ErrUnexpectedEOF)) {
			s.queue = append(s.queue, chunk[:n])
		}
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = io.EOF
			}
			s.err = err
			return
		}
	}
}

// fillFromChunks takes a batch in the reader's own buffers.
func (s *presumSplitter) fillFromChunks() {
	if err := s.ctx.Err(); err != nil {
		s.err = err
		return
	}
	for range presumBatch {
		chunk, err := s.chunks.Next(s.size)
		if len(chunk) > 0 && (err == nil || errors.Is(err, io.EOF)) {
			s.queue = append(s.queue, chunk)
		}
		if err == nil && len(chunk) < s.size {
			err = io.EOF // the last chunk
		}
		if err != nil {
			s.err = err
			return
		}
	}
}

// sumOf returns the digest of data if data is the chunk handed out last.
func (s *presumSplitter) sumOf(data []byte) ([sha256.Size]byte, bool) {
	if len(data) == 0 || len(data) != len(s.last) || &data[0] != &s.last[0] {
		return [sha256.Size]byte{}, false
	}
	return s.lastSum, true
}

// presumBuilder builds CIDs like its prefix, taking a raw leaf's digest
// from the splitter that cut it; anything else (the dag-pb nodes above
// the leaves) is hashed as usual.
type presumBuilder struct {
	prefix cid.Prefix
	s      *presumSplitter
}

func (b presumBuilder) Sum(data []byte) (cid.Cid, error) {
	if b.prefix.MhType == mh.SHA2_256 && b.prefix.Version == 1 {
		if sum, ok := b.s.sumOf(data); ok {
			hash, err := mh.Encode(sum[:], mh.SHA2_256)
			if err != nil {
				return cid.Undef, err
			}
			return cid.NewCidV1(b.prefix.Codec, hash), nil
		}
	}
	return b.prefix.Sum(data)
}

func (b presumBuilder) GetCodec() uint64 { return b.prefix.Codec }

func (b presumBuilder) WithCodec(codec uint64) cid.Builder {
	b.prefix.Codec = codec
	return b
}
