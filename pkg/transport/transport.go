// Package transport reads images from and writes images to the places
// skopeo users name with its transport syntax: oci:DIR[:TAG],
// oci-archive:FILE[:TAG], docker-archive:FILE and docker://REF.
package transport

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/ipfs/go-cid"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/internal/errkind"
)

// Source is an image to read: a top-level descriptor (an index or a
// manifest) and the blobs under it.
type Source interface {
	// Reference is the reference the source was opened from.
	Reference() string
	// Root is the image's top-level descriptor.
	Root(ctx context.Context) (ocispec.Descriptor, error)
	// Open returns the bytes of a blob; callers verify them against d.
	Open(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error)
	Close() error
}

// Destination receives an image's blobs, then its top-level descriptor.
// Nothing is visible as an image until Commit succeeds.
type Destination interface {
	Reference() string
	// Has reports whether a verified copy of the blob is already there.
	Has(ctx context.Context, d ocispec.Descriptor) (bool, error)
	// WriteBlob stores r as the blob d, failing if its size or digest differ.
	WriteBlob(ctx context.Context, d ocispec.Descriptor, r io.Reader) error
	// Commit records root as the image (under the tag, if any).
	Commit(ctx context.Context, root ocispec.Descriptor) error
	Close() error
}

// Linker is a Destination that can take a blob as a link to a file that
// holds it already, instead of a copy of its bytes.
type Linker interface {
	// LinkBlob makes the file at path the blob d. The caller vouches that
	// the file holds d's bytes and that nothing will write to it.
	LinkBlob(ctx context.Context, d ocispec.Descriptor, path string) error
}

// ErrUnknownTransport is returned for a reference whose transport shoal
// does not know.
var ErrUnknownTransport = errkind.New("unknown transport", errdefs.ErrInvalidArgument)

// SourceOptions change how sources are opened.
type SourceOptions struct {
	// PlainHTTP reaches docker:// registries over HTTP instead of HTTPS,
	// for test registries on localhost.
	PlainHTTP bool
}

// OpenSource opens a source reference.
func OpenSource(ctx context.Context, ref string, opts SourceOptions) (Source, error) {
	transport, rest, ok := strings.Cut(ref, ":")
	if !ok || rest == "" {
		return nil, fmt.Errorf("source %q: %w: want oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE or docker://REF", ref, ErrUnknownTransport)
	}
	switch transport {
	case "oci":
		dir, tag := splitPathTag(rest)
		return openLayoutSource(ref, dir, tag)
	case "oci-archive":
		file, tag := splitPathTag(rest)
		return openArchiveSource(ref, file, tag)
	case "docker-archive":
		file, _ := splitPathTag(rest)
		return openDockerArchive(ref, file)
	case "docker":
		if !strings.HasPrefix(rest, "//") {
			return nil, fmt.Errorf("source %q: want docker://REF", ref)
		}
		return openRegistry(ctx, ref, strings.TrimPrefix(rest, "//"), opts)
	default:
		return nil, fmt.Errorf("source %q: %w %q: want oci:DIR, oci-archive:FILE, docker-archive:FILE or docker://REF", ref, ErrUnknownTransport, transport)
	}
}

// OpenDestination opens a destination reference for a pull.
func OpenDestination(ref string) (Destination, error) {
	transport, rest, ok := strings.Cut(ref, ":")
	if !ok || rest == "" {
		return nil, fmt.Errorf("destination %q: %w: want oci:DIR[:TAG] or oci-archive:FILE[:TAG]", ref, ErrUnknownTransport)
	}
	switch transport {
	case "oci":
		dir, tag := splitPathTag(rest)
		return newLayoutDestination(ref, dir, tag)
	case "oci-archive":
		file, tag := splitPathTag(rest)
		return newArchiveDestination(ref, file, tag)
	default:
		return nil, fmt.Errorf("destination %q: %w %q: want oci:DIR[:TAG] or oci-archive:FILE[:TAG]", ref, ErrUnknownTransport, transport)
	}
}

// splitPathTag splits skopeo's PATH[:TAG]; a tag never holds a slash, so
// the last colon after the last slash separates them.
func splitPathTag(s string) (path, tag string) {
	i := strings.LastIndex(s, ":")
	if i < 0 || strings.Contains(s[i+1:], "/") {
		return s, ""
	}
	return s[:i], s[i+1:]
}

// ParseCID accepts a CID bare or as ipfs://CID or /ipfs/CID.
func ParseCID(s string) (cid.Cid, error) {
	t := strings.TrimPrefix(strings.TrimPrefix(s, "ipfs://"), "/ipfs/")
	c, err := cid.Decode(t)
	if err != nil {
		return cid.Undef, fmt.Errorf("%q is not a CID: %w", s, err)
	}
	return c, nil
}
