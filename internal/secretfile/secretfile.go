// Package secretfile reads the small secrets a node keeps in files (its
// swarm key, its group key), refusing one that others than its owner may
// read or write: such a key is no longer a secret, and one others can
// write lets them choose whom the node trusts.
package secretfile

import (
	"fmt"
	"io"
	"os"
)

// Read reads the secret what at path, of at most limit bytes. A missing
// file is an error wrapping fs.ErrNotExist, for the caller to explain.
func Read(what, path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %s is not a regular file", what, path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s %s has mode %04o: group or other users can read or write it; run chmod 600 %s", what, path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s %s: larger than %d bytes", what, path, limit)
	}
	return data, nil
}
