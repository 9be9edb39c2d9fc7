package sha256x

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
)

// Stream is the SHA-256 digest of one long message, a blob, whose bytes
// arrive in chunks that each need a digest of their own too (their CIDs).
//
// With the SHA extensions a chunk's blocks go through the compression
// function once for both digests: the message schedule is computed once,
// and the rounds of the two states interleave. Each round instruction
// waits on the one before it in its own state, so the other state's
// rounds fill that wait, and the two digests cost little more than one.
// Elsewhere Stream hashes the bytes twice with crypto/sha256.
type Stream struct {
	whole hash.Hash // without the SHA extensions

	h    [8]uint32
	n    uint64 // bytes hashed into h
	tail [64]byte
	nt   int // bytes waiting in tail for a whole block
}

// StreamAccelerated reports whether a Stream hashes each chunk once for
// both digests on this CPU.
func StreamAccelerated() bool { return pairAccelerated }

// NewStream starts a stream.
func NewStream() *Stream {
	if !pairAccelerated {
		return &Stream{whole: sha256.New()}
	}
	return &Stream{h: initialState}
}

// Chunk adds chunk to the stream and returns chunk's own digest.
func (s *Stream) Chunk(chunk []byte) [sha256.Size]byte {
	if s.whole != nil {
		s.whole.Write(chunk)
		return sha256.Sum256(chunk)
	}
	if s.nt > 0 {
		// The stream is between blocks: the chunk's blocks are not its.
		s.write(chunk)
		return sha256.Sum256(chunk)
	}
	full := len(chunk) &^ 63
	own := initialState
	blockPair(&s.h, &own, chunk[:full])
	s.n += uint64(full)
	s.nt = copy(s.tail[:], chunk[full:])
	return finish(&own, chunk[full:], uint64(len(chunk)))
}

// ChunkIf adds chunk to the stream if chunk's own digest is want, and
// reports whether it is: a block fetched for a blob is hashed once for
// its CID and the blob, and joins the blob only if it is the block the
// blob's DAG names.
func (s *Stream) ChunkIf(chunk []byte, want [sha256.Size]byte) bool {
	if s.whole != nil || s.nt > 0 {
		if sha256.Sum256(chunk) != want {
			return false
		}
		s.Write(chunk)
		return true
	}
	full := len(chunk) &^ 63
	h, own := s.h, initialState
	blockPair(&h, &own, chunk[:full])
	if finish(&own, chunk[full:], uint64(len(chunk))) != want {
		return false
	}
	s.h = h
	s.n += uint64(full)
	s.nt = copy(s.tail[:], chunk[full:])
	return true
}

// Write adds p to the stream alone, for bytes that need no digest of
// their own.
func (s *Stream) Write(p []byte) (int, error) {
	if s.whole != nil {
		return s.whole.Write(p)
	}
	s.write(p)
	return len(p), nil
}

// Sum returns the digest of every byte added so far.
func (s *Stream) Sum() [sha256.Size]byte {
	if s.whole != nil {
		return [sha256.Size]byte(s.whole.Sum(nil))
	}
	h := s.h
	return finish(&h, s.tail[:s.nt], s.n+uint64(s.nt))
}

// write adds p to the stream alone.
func (s *Stream) write(p []byte) {
	var scratch [8]uint32
	if s.nt > 0 {
		n := copy(s.tail[s.nt:], p)
		s.nt += n
		p = p[n:]
		if s.nt < len(s.tail) {
			return
		}
		blockPair(&s.h, &scratch, s.tail[:])
		s.n += 64
		s.nt = 0
	}
	full := len(p) &^ 63
	blockPair(&s.h, &scratch, p[:full])
	s.n += uint64(full)
	s.nt = copy(s.tail[:], p[full:])
}

// finish pads the last bytes of a message of size bytes (fewer than 64,
// after h's blocks) and returns its digest.
func finish(h *[8]uint32, last []byte, size uint64) [sha256.Size]byte {
	var pad [128]byte
	n := copy(pad[:], last)
	pad[n] = 0x80
	blocks := 64
	if n >= 64-8 {
		blocks = 128
	}
	binary.BigEndian.PutUint64(pad[blocks-8:blocks], size*8)
	var scratch [8]uint32
	blockPair(h, &scratch, pad[:blocks])
	var sum [sha256.Size]byte
	for i, v := range h {
		binary.BigEndian.PutUint32(sum[4*i:], v)
	}
	return sum
}
