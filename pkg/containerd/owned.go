package containerd

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Files shoal writes into containerd's configuration (hosts.toml files,
// the runtime drop-in) start with a marker that names them as shoal's. A
// file at the same path that shoal did not write is kept beside as
// PATH.shoal-backup and put back when shoal's is removed, so that
// removing shoal leaves containerd's configuration as it was.

const backupSuffix = ".shoal-backup"

// writeOwned replaces path with data (which starts with marker) in one
// rename, keeping a file there that does not start with marker as its
// backup. It reports whether the file's content changed.
func writeOwned(path string, data []byte, marker string) (bool, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return false, err
	}
	old, err := os.ReadFile(path)
	if err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	if err == nil && !bytes.HasPrefix(old, []byte(marker)) {
		if _, err := os.Stat(path + backupSuffix); errors.Is(err, fs.ErrNotExist) {
			if err := os.Rename(path, path+backupSuffix); err != nil {
				return false, err
			}
		}
	}
	tmp := path + ".shoal-tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return false, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return false, err
	}
	return true, nil
}

// removeOwned removes the file shoal wrote at path (it starts with
// marker), putting back its backup if there is one, and reports whether
// anything changed. A file shoal did not write is left and is an error.
func removeOwned(path, marker string) (bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !bytes.HasPrefix(data, []byte(marker)) {
		return false, fmt.Errorf("%s was not written by shoal: left as it is", path)
	}
	if _, serr := os.Stat(path + backupSuffix); serr == nil {
		err = os.Rename(path+backupSuffix, path)
	} else if err = os.Remove(path); err == nil {
		_ = os.Remove(filepath.Dir(path)) // only if empty
	}
	return err == nil, err
}
