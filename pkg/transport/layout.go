package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/internal/errkind"
)

// maxIndexSize bounds index.json; real ones are a few KiB.
const maxIndexSize = 4 << 20

// ErrInvalidLayout is returned for a directory that is not an OCI layout.
var ErrInvalidLayout = errkind.New("not a valid OCI image layout", errdefs.ErrInvalidArgument)

type layoutSource struct {
	ref, dir, tag string
	root          ocispec.Descriptor
	cleanup       func() error
}

func openLayoutSource(ref, dir, tag string) (*layoutSource, error) {
	idx, err := readLayoutIndex(dir)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", ref, err)
	}
	root, err := SelectManifest(idx, tag)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", ref, err)
	}
	return &layoutSource{ref: ref, dir: dir, tag: tag, root: root}, nil
}

// readLayoutIndex reads and checks a layout's oci-layout and index.json.
func readLayoutIndex(dir string) (ocispec.Index, error) {
	data, err := os.ReadFile(filepath.Join(dir, ocispec.ImageLayoutFile))
	if err != nil {
		return ocispec.Index{}, fmt.Errorf("%s: %w: %v", dir, ErrInvalidLayout, err)
	}
	var lay ocispec.ImageLayout
	if err := json.Unmarshal(data, &lay); err != nil || lay.Version != ocispec.ImageLayoutVersion {
		return ocispec.Index{}, fmt.Errorf("%s: %w: oci-layout file is not {\"imageLayoutVersion\":%q}", dir, ErrInvalidLayout, ocispec.ImageLayoutVersion)
	}
	f, err := os.Open(filepath.Join(dir, ocispec.ImageIndexFile))
	if err != nil {
		return ocispec.Index{}, fmt.Errorf("%s: %w: %v", dir, ErrInvalidLayout, err)
	}
	defer f.Close()
	idx, err := ParseLayoutIndex(io.LimitReader(f, maxIndexSize))
	if err != nil {
		return ocispec.Index{}, fmt.Errorf("%s: %w", dir, err)
	}
	return idx, nil
}

// ParseLayoutIndex parses a layout's index.json and checks every descriptor.
func ParseLayoutIndex(r io.Reader) (ocispec.Index, error) {
	var idx ocispec.Index
	if err := json.NewDecoder(r).Decode(&idx); err != nil {
		return ocispec.Index{}, fmt.Errorf("%w: index.json: %v", ErrInvalidLayout, err)
	}
	if idx.SchemaVersion != 2 {
		return ocispec.Index{}, fmt.Errorf("%w: index.json: schemaVersion %d, want 2", ErrInvalidLayout, idx.SchemaVersion)
	}
	for i, d := range idx.Manifests {
		if err := CheckDescriptor(d); err != nil {
			return ocispec.Index{}, fmt.Errorf("%w: index.json: manifests[%d]: %v", ErrInvalidLayout, i, err)
		}
	}
	return idx, nil
}

// CheckDescriptor rejects descriptors whose digest or size cannot be right.
func CheckDescriptor(d ocispec.Descriptor) error {
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("digest %q: %w", d.Digest, err)
	}
	if d.Size < 0 {
		return fmt.Errorf("descriptor %s: negative size %d", d.Digest, d.Size)
	}
	return nil
}

// SelectManifest picks the image a layout reference names: the entry
// tagged tag, or the only entry when no tag is given.
func SelectManifest(idx ocispec.Index, tag string) (ocispec.Descriptor, error) {
	if tag == "" {
		switch len(idx.Manifests) {
		case 1:
			return idx.Manifests[0], nil
		case 0:
			return ocispec.Descriptor{}, errors.New("the layout holds no image")
		default:
			return ocispec.Descriptor{}, fmt.Errorf("the layout holds %d images: name one with :TAG", len(idx.Manifests))
		}
	}
	for _, d := range idx.Manifests {
		if d.Annotations[ocispec.AnnotationRefName] == tag {
			return d, nil
		}
	}
	return ocispec.Descriptor{}, errkind.New(fmt.Sprintf("no image tagged %q in the layout", tag), errdefs.ErrNotFound)
}

func (s *layoutSource) Reference() string { return s.ref }

func (s *layoutSource) Root(context.Context) (ocispec.Descriptor, error) {
	d := s.root
	d.Annotations = withoutRefName(d.Annotations)
	return d, nil
}

func (s *layoutSource) Open(_ context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	p, err := blobPath(s.dir, d.Digest)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("source %s: blob %s is missing from the layout", s.ref, d.Digest)
	}
	return f, err
}

func (s *layoutSource) Close() error {
	if s.cleanup != nil {
		return s.cleanup()
	}
	return nil
}

// withoutRefName drops the layout's tag annotation, which belongs to the
// layout's index and not to the image.
func withoutRefName(a map[string]string) map[string]string {
	if _, ok := a[ocispec.AnnotationRefName]; !ok {
		return a
	}
	out := map[string]string{}
	for k, v := range a {
		if k != ocispec.AnnotationRefName {
			out[k] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func blobPath(dir string, d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("digest %q: %w", d, err)
	}
	return filepath.Join(dir, ocispec.ImageBlobsDir, d.Algorithm().String(), d.Encoded()), nil
}

type layoutDestination struct {
	ref, dir, tag string
}

func newLayoutDestination(ref, dir, tag string) (*layoutDestination, error) {
	if _, err := os.Stat(filepath.Join(dir, ocispec.ImageIndexFile)); err == nil {
		if _, err := readLayoutIndex(dir); err != nil {
			return nil, fmt.Errorf("destination %s exists and %w; choose an empty directory", ref, err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, ocispec.ImageBlobsDir), 0o755); err != nil {
		return nil, fmt.Errorf("destination %s: %w", ref, err)
	}
	return &layoutDestination{ref: ref, dir: dir, tag: tag}, nil
}

func (l *layoutDestination) Reference() string { return l.ref }

func (l *layoutDestination) Has(_ context.Context, d ocispec.Descriptor) (bool, error) {
	p, err := blobPath(l.dir, d.Digest)
	if err != nil {
		return false, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	// A blob left by an earlier, interrupted pull counts only if it verifies.
	return VerifyReader(f, d) == nil, nil
}

func (l *layoutDestination) WriteBlob(_ context.Context, d ocispec.Descriptor, r io.Reader) error {
	p, err := blobPath(l.dir, d.Digest)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".partial-"+d.Digest.Encoded()[:12]+"-")
	if err != nil {
		return fmt.Errorf("write blob %s: %w", d.Digest, err)
	}
	defer os.Remove(tmp.Name())
	if err := VerifyReader(io.TeeReader(r, tmp), d); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write blob %s: %w", d.Digest, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), p)
}

// LinkBlob hard-links path into the layout; it fails across file systems,
// and the caller then copies.
func (l *layoutDestination) LinkBlob(_ context.Context, d ocispec.Descriptor, path string) error {
	p, err := blobPath(l.dir, d.Digest)
	if err != nil {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("link blob %s: %w", d.Digest, err)
	}
	if fi.Size() != d.Size {
		return fmt.Errorf("link blob %s: %s has %d bytes, not %d", d.Digest, path, fi.Size(), d.Size)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	// Linked under a temporary name and renamed, as WriteBlob does, so a
	// blob left by an earlier pull is replaced in one step.
	tmp := filepath.Join(filepath.Dir(p), fmt.Sprintf(".link-%s-%d", d.Digest.Encoded()[:12], os.Getpid()))
	_ = os.Remove(tmp)
	if err := os.Link(path, tmp); err != nil {
		return fmt.Errorf("link blob %s: %w", d.Digest, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("link blob %s: %w", d.Digest, err)
	}
	return nil
}

func (l *layoutDestination) Commit(_ context.Context, root ocispec.Descriptor) error {
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	if old, err := readLayoutIndex(l.dir); err == nil {
		idx.Manifests = old.Manifests
	}
	entry := root
	entry.Annotations = withoutRefName(root.Annotations)
	if l.tag != "" {
		a := map[string]string{ocispec.AnnotationRefName: l.tag}
		for k, v := range entry.Annotations {
			a[k] = v
		}
		entry.Annotations = a
	}
	kept := idx.Manifests[:0]
	for _, d := range idx.Manifests {
		sameTag := l.tag != "" && d.Annotations[ocispec.AnnotationRefName] == l.tag
		sameUntagged := l.tag == "" && d.Digest == root.Digest && d.Annotations[ocispec.AnnotationRefName] == ""
		if !sameTag && !sameUntagged {
			kept = append(kept, d)
		}
	}
	idx.Manifests = append(kept, entry)
	if err := writeFileAtomic(filepath.Join(l.dir, ocispec.ImageLayoutFile), mustJSON(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})); err != nil {
		return err
	}
	// index.json comes last: a layout without it is not mistaken for a
	// complete one.
	return writeFileAtomic(filepath.Join(l.dir, ocispec.ImageIndexFile), mustJSON(idx))
}

func (l *layoutDestination) Close() error { return nil }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
