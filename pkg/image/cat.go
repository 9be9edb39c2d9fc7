package image

import (
	"context"
	"io"

	"github.com/ipfs/go-cid"
)

// CatAt reads blob c from offset: seeking where the reader can, else
// reading past the bytes before it.
func CatAt(ctx context.Context, store Store, c cid.Cid, offset int64) (io.ReadCloser, error) {
	rc, err := store.Cat(ctx, c)
	if err != nil {
		return nil, err
	}
	if offset > 0 {
		if s, ok := rc.(io.Seeker); ok {
			_, err = s.Seek(offset, io.SeekStart)
		} else {
			_, err = io.CopyN(io.Discard, rc, offset)
		}
		if err != nil {
			rc.Close()
			return nil, err
		}
	}
	return rc, nil
}
