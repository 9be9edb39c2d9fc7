package transport

import (
	"errors"
	"fmt"
	"io"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/internal/errkind"
)

// ErrDigestMismatch is returned when bytes do not match their descriptor.
var ErrDigestMismatch = errkind.New("content does not match its descriptor", errdefs.ErrDataLoss)

// VerifyReader reads r to the end and checks it against d's size and digest.
func VerifyReader(r io.Reader, d ocispec.Descriptor) error {
	v, err := NewVerifier(r, d)
	if err != nil {
		return err
	}
	return v.Drain()
}

// Drain reads the verifier to its end: nil if the bytes are the blob (for
// a size verifier, if they are its size: see Check).
func (v *Verifier) Drain() error {
	// Large reads keep the number of writes down when r tees into a file
	// (io.Copy to io.Discard would read 8 KiB at a time); a small blob's
	// buffer is its size and a byte more, which shows one that runs over,
	// not a MiB to clear (its every page a fault).
	size := int64(1 << 20)
	if v.d.Size >= 0 && v.d.Size < size {
		size = v.d.Size + 1 // a peer's descriptor may say any size: no overflow
	}
	buf := make([]byte, size)
	for {
		_, err := v.Read(buf)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// Verifier passes bytes through and, at EOF, fails the read unless they
// match the descriptor, so no consumer can mistake bad bytes for a blob.
type Verifier struct {
	r        io.Reader
	d        ocispec.Descriptor
	digester digest.Digester // nil: the consumer hashes (NewSizeVerifier)
	n        int64
}

// NewVerifier wraps r; it fails early once more than d.Size bytes arrive.
func NewVerifier(r io.Reader, d ocispec.Descriptor) (*Verifier, error) {
	if err := d.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("digest %q: %w", d.Digest, err)
	}
	return &Verifier{r: r, d: d, digester: d.Digest.Algorithm().Digester()}, nil
}

// NewSizeVerifier is NewVerifier for a consumer that hashes the bytes
// itself, in a pass it makes over them anyway: the reads check the size,
// and Check, once the consumer has read to the end, checks the digest it
// computed. The bytes are not the blob until Check says so.
func NewSizeVerifier(r io.Reader, d ocispec.Descriptor) (*Verifier, error) {
	if err := d.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("digest %q: %w", d.Digest, err)
	}
	return &Verifier{r: r, d: d}, nil
}

func (v *Verifier) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.n += int64(n)
	if v.digester != nil {
		v.digester.Hash().Write(p[:n])
	}
	if v.n > v.d.Size {
		return n, fmt.Errorf("blob %s: %w: more than %d bytes", v.d.Digest, ErrDigestMismatch, v.d.Size)
	}
	if errors.Is(err, io.EOF) {
		if v.n != v.d.Size {
			return n, fmt.Errorf("blob %s: %w: %d bytes, want %d", v.d.Digest, ErrDigestMismatch, v.n, v.d.Size)
		}
		if v.digester != nil {
			if err := v.Check(v.digester.Digest()); err != nil {
				return n, err
			}
		}
	}
	return n, err
}

// Check reports whether got, the digest of the bytes read, is the
// descriptor's.
func (v *Verifier) Check(got digest.Digest) error {
	if got != v.d.Digest {
		return fmt.Errorf("blob %s: %w: bytes hash to %s", v.d.Digest, ErrDigestMismatch, got)
	}
	return nil
}
