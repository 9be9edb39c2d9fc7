package transport

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// dockerArchive reads `docker save` tarballs.
type dockerArchive struct {
	ref      string
	img      v1.Image
	manifest []byte
	config   []byte
	root     ocispec.Descriptor
}

func openDockerArchive(ref, file string) (*dockerArchive, error) {
	img, err := tarball.ImageFromPath(file, nil)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", ref, err)
	}
	m, err := img.RawManifest()
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", ref, err)
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", ref, err)
	}
	mt, err := img.MediaType()
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", ref, err)
	}
	root := ocispec.Descriptor{MediaType: string(mt), Digest: digest.FromBytes(m), Size: int64(len(m))}
	return &dockerArchive{ref: ref, img: img, manifest: m, config: cfg, root: root}, nil
}

func (a *dockerArchive) Reference() string                                { return a.ref }
func (a *dockerArchive) Root(context.Context) (ocispec.Descriptor, error) { return a.root, nil }
func (a *dockerArchive) Close() error                                     { return nil }

func (a *dockerArchive) Open(_ context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	switch d.Digest {
	case a.root.Digest:
		return io.NopCloser(bytes.NewReader(a.manifest)), nil
	case digest.FromBytes(a.config):
		return io.NopCloser(bytes.NewReader(a.config)), nil
	}
	h, err := v1.NewHash(d.Digest.String())
	if err != nil {
		return nil, err
	}
	l, err := a.img.LayerByDigest(h)
	if err != nil {
		return nil, fmt.Errorf("source %s: blob %s: %w", a.ref, d.Digest, err)
	}
	return l.Compressed()
}

// registry reads an image from an OCI distribution registry.
type registry struct {
	ref  string
	repo name.Repository
	opts []remote.Option
	root *remote.Descriptor
}

func openRegistry(ctx context.Context, full, ref string, o SourceOptions) (*registry, error) {
	var nopts []name.Option
	if o.PlainHTTP {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.ParseReference(ref, nopts...)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", full, err)
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)}
	root, err := remote.Get(r, opts...)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", full, err)
	}
	return &registry{ref: full, repo: r.Context(), opts: opts, root: root}, nil
}

func (r *registry) Reference() string { return r.ref }
func (r *registry) Close() error      { return nil }

func (r *registry) Root(context.Context) (ocispec.Descriptor, error) {
	return ocispec.Descriptor{
		MediaType: string(r.root.MediaType),
		Digest:    digest.Digest(r.root.Digest.String()),
		Size:      r.root.Size,
	}, nil
}

func (r *registry) Open(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	if d.Digest.String() == r.root.Digest.String() {
		return io.NopCloser(bytes.NewReader(r.root.Manifest)), nil
	}
	ref := r.repo.Digest(d.Digest.String())
	opts := append(r.opts, remote.WithContext(ctx))
	if IsManifest(d.MediaType) || IsIndex(d.MediaType) {
		desc, err := remote.Get(ref, opts...)
		if err != nil {
			return nil, fmt.Errorf("source %s: manifest %s: %w", r.ref, d.Digest, err)
		}
		return io.NopCloser(bytes.NewReader(desc.Manifest)), nil
	}
	l, err := remote.Layer(ref, opts...)
	if err != nil {
		return nil, fmt.Errorf("source %s: blob %s: %w", r.ref, d.Digest, err)
	}
	return l.Compressed()
}
