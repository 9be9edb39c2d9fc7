package transport

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// openArchiveSource unpacks an oci-archive (a tar of an OCI layout) into a
// temporary directory and reads it as a layout.
func openArchiveSource(ref, file, tag string) (*layoutSource, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", ref, err)
	}
	defer f.Close()
	dir, err := os.MkdirTemp("", "shoal-oci-archive-")
	if err != nil {
		return nil, err
	}
	if err := ExtractLayoutTar(f, dir); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("source %s: %w", ref, err)
	}
	src, err := openLayoutSource(ref, dir, tag)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	src.cleanup = func() error { return os.RemoveAll(dir) }
	return src, nil
}

// ExtractLayoutTar unpacks the regular files and directories of a tar into
// dir. Entries that would land outside dir, and links of any kind, are
// refused: an image layout holds neither.
func ExtractLayoutTar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: archive: %v", ErrInvalidLayout, err)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		if name == "." {
			continue
		}
		if path.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("%w: archive entry %q leaves the layout", ErrInvalidLayout, h.Name)
		}
		dst := filepath.Join(dir, filepath.FromSlash(name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
			if err != nil {
				return err
			}
			if _, err := io.Copy(out, tr); err != nil {
				out.Close()
				return fmt.Errorf("%w: archive entry %q: %v", ErrInvalidLayout, h.Name, err)
			}
			if err := out.Close(); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: archive entry %q has type %q; a layout holds only files and directories", ErrInvalidLayout, h.Name, h.Typeflag)
		}
	}
}

// archiveDestination writes a layout into a temporary directory and, on
// Commit, tars it into place under its final name in one rename.
type archiveDestination struct {
	*layoutDestination
	file string
	tmp  string
}

func newArchiveDestination(ref, file, tag string) (*archiveDestination, error) {
	tmp, err := os.MkdirTemp(filepath.Dir(file), ".shoal-oci-archive-")
	if err != nil {
		return nil, fmt.Errorf("destination %s: %w", ref, err)
	}
	if existing, err := os.Open(file); err == nil {
		err := ExtractLayoutTar(existing, tmp)
		existing.Close()
		if err != nil {
			os.RemoveAll(tmp)
			return nil, fmt.Errorf("destination %s exists and %w", ref, err)
		}
	}
	l, err := newLayoutDestination(ref, tmp, tag)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	return &archiveDestination{layoutDestination: l, file: file, tmp: tmp}, nil
}

func (a *archiveDestination) Commit(ctx context.Context, root ocispec.Descriptor) error {
	if err := a.layoutDestination.Commit(ctx, root); err != nil {
		return err
	}
	out, err := os.CreateTemp(filepath.Dir(a.file), ".partial-"+filepath.Base(a.file)+"-")
	if err != nil {
		return err
	}
	defer os.Remove(out.Name())
	if err := tarDir(a.tmp, out); err != nil {
		out.Close()
		return fmt.Errorf("destination %s: %w", a.ref, err)
	}
	if err := out.Close(); err != nil {
		return err
	}
	if err := os.Chmod(out.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(out.Name(), a.file)
}

func (a *archiveDestination) Close() error { return os.RemoveAll(a.tmp) }

func tarDir(dir string, w io.Writer) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		h.Uname, h.Gname, h.Uid, h.Gid = "", "", 0, 0
		if d.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
