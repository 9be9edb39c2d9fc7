package layerindex

/*
#cgo LDFLAGS: -lz
#include <stdlib.h>
#include <zlib.h>

// shoal_inflate inflates from in into out, a deflate block at a time,
// until in is used up, out is full, a member ends, or a block ends
// (outside the last block) more than span bytes of output after last,
// where out_at is the output's offset at out. in and out are the
// caller's memory for this call only, so the stream forgets them before
// it returns. Whole blocks in one call, not one call each: each return to
// Go may wait for the scheduler. *checkpoint says whether it stopped where
// a checkpoint goes (zlib's data_type: 128 at a block boundary, 64 in the
// last block), and *bits how many bits of the last byte read belong to
// what follows.
static int shoal_inflate(z_stream *s, unsigned char *in, unsigned in_len,
		unsigned char *out, unsigned out_len, long long out_at,
		long long last, long long span, unsigned *in_left,
		unsigned *out_left, int *checkpoint, int *bits) {
	s->next_in = in;
	s->avail_in = in_len;
	s->next_out = out;
	s->avail_out = out_len;
	int ret;
	*checkpoint = 0;
	for (;;) {
		ret = inflate(s, Z_BLOCK);
		if (ret != Z_OK)
			break;
		long long at = out_at + (long long)(out_len - s->avail_out);
		*checkpoint = (s->data_type & 128) && !(s->data_type & 64) && (at == 0 || at - last > span);
		if (*checkpoint || s->avail_in == 0 || s->avail_out == 0)
			break;
	}
	*in_left = s->avail_in;
	*out_left = s->avail_out;
	*bits = s->data_type & 7;
	s->next_in = Z_NULL;
	s->avail_in = 0;
	s->next_out = Z_NULL;
	s->avail_out = 0;
	return ret;
}

// shoal_inflate_new starts a stream that reads a gzip or zlib header
// (windowBits 15 + 32).
static z_stream *shoal_inflate_new(int *ret) {
	z_stream *s = calloc(1, sizeof *s);
	if (s == NULL) {
		*ret = Z_MEM_ERROR;
		return NULL;
	}
	*ret = inflateInit2(s, 47);
	if (*ret != Z_OK) {
		free(s);
		return NULL;
	}
	return s;
}

static int shoal_inflate_reset(z_stream *s) { return inflateReset2(s, 47); }

static void shoal_inflate_free(z_stream *s) {
	inflateEnd(s);
	free(s);
}

static const char *shoal_inflate_msg(z_stream *s) { return s->msg; }
*/
import "C"

import (
	"errors"
	"fmt"
	"math"
)

// zstream is zlib's inflater, stepping through a gzip stream one deflate
// block at a time: zlib can say where a block ends, which a checkpoint
// needs (a point to start inflating from), and Go's inflaters cannot.
type zstream struct {
	s *C.z_stream
}

// zstep is what one inflate step did.
type zstep struct {
	in, out int // bytes consumed and produced
	// checkpoint: the step ended where a checkpoint goes, between two
	// deflate blocks (or after a member's header), not in the last block,
	// more than the span past the last; bits of the last byte consumed
	// belong to what follows.
	checkpoint bool
	bits       uint8
	end        bool // a gzip member ended
}

var errInflateStalled = errors.New("inflate made no progress")

func newZstream() (*zstream, error) {
	var ret C.int
	s := C.shoal_inflate_new(&ret)
	if s == nil {
		return nil, fmt.Errorf("inflate: zlib error %d", int(ret))
	}
	return &zstream{s: s}, nil
}

// step inflates from in into out, whose first byte is at offset outAt of
// the output, until in is used up, out is full, a member ends, or a block
// ends more than span bytes of output past last (or at offset 0): where
// a checkpoint goes. in and out must not be empty.
func (z *zstream) step(in, out []byte, outAt, last, span int64) (zstep, error) {
	inLen, outLen := min(len(in), math.MaxUint32), min(len(out), math.MaxUint32)
	var inLeft, outLeft C.uint
	var checkpoint, bits C.int
	ret := C.shoal_inflate(z.s, (*C.uchar)(&in[0]), C.uint(inLen), (*C.uchar)(&out[0]), C.uint(outLen),
		C.longlong(outAt), C.longlong(last), C.longlong(span), &inLeft, &outLeft, &checkpoint, &bits)
	st := zstep{in: inLen - int(inLeft), out: outLen - int(outLeft)}
	switch ret {
	case C.Z_OK:
	case C.Z_STREAM_END:
		st.end = true
		return st, nil
	case C.Z_BUF_ERROR:
		if st.in == 0 && st.out == 0 {
			return st, errInflateStalled
		}
	default:
		msg := "zlib error " + fmt.Sprint(int(ret))
		if m := C.shoal_inflate_msg(z.s); m != nil {
			msg = C.GoString(m)
		}
		return st, fmt.Errorf("inflate: %s", msg)
	}
	st.checkpoint, st.bits = checkpoint != 0, uint8(bits)
	return st, nil
}

// reset starts the stream over, for the next gzip member.
func (z *zstream) reset() error {
	if ret := C.shoal_inflate_reset(z.s); ret != C.Z_OK {
		return fmt.Errorf("inflate: reset: zlib error %d", int(ret))
	}
	return nil
}

func (z *zstream) close() {
	if z.s != nil {
		C.shoal_inflate_free(z.s)
		z.s = nil
	}
}
