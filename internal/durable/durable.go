// Package durable makes files a store wrote reach the disk before the store
// records that it holds them.
//
// A store remembers the files it wrote (Files.Wrote) and syncs those, and
// the directories that name them, when it is asked to be durable. One
// syncfs of the file system would do it in one call, but it also writes
// every other dirty file there: a mirror's spool of a blob still arriving
// (a file removed moments later, never needed on the disk), containerd's
// ingests, other programs' files. On a node that pulls many blobs at once,
// every record then waits for the others' bytes, and the disk writes
// them twice.
package durable

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// MaxFiles is how many files a sync takes one at a time; past it, one
// syncfs of the file system is cheaper than a flush per file.
const MaxFiles = 256

// Files is the set of files under a root directory written since they were
// last synced. The zero value is not ready: use NewFiles.
type Files struct {
	root string
	// syncing is held through a sync: one that finds nothing new still
	// waits for the one under way, whose files may be its caller's.
	syncing sync.Mutex

	mu     sync.Mutex
	files  map[string]struct{}
	failed []error // flushes that failed outside Sync (Failed)
}

// NewFiles tracks the files written under root.
func NewFiles(root string) *Files {
	return &Files{root: filepath.Clean(root), files: map[string]struct{}{}}
}

// Wrote notes that path, a file under the root, was written or created.
func (f *Files) Wrote(path string) {
	f.mu.Lock()
	f.files[path] = struct{}{}
	f.mu.Unlock()
}

// Failed notes that a flush of path made outside Sync failed (a store
// that flushes files as it writes them): the next Sync fails with err.
// The kernel reports a write-back error once, to the flush that met it,
// so a later sync of the file could succeed with its bytes lost.
func (f *Files) Failed(path string, err error) {
	f.mu.Lock()
	f.files[path] = struct{}{}
	f.failed = append(f.failed, err)
	f.mu.Unlock()
}

// Pending is how many files the next Sync has to make durable.
func (f *Files) Pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.files)
}

// Sync makes every file noted before the call durable, with the
// directories from each file's up to the root, which hold their names. A
// file removed since it was noted is skipped: there is nothing of it to
// keep.
func (f *Files) Sync() error {
	f.syncing.Lock()
	defer f.syncing.Unlock()
	f.mu.Lock()
	files, failed := f.files, f.failed
	f.files, f.failed = map[string]struct{}{}, nil
	f.mu.Unlock()
	if len(files) == 0 {
		return nil
	}
	err := errors.Join(append(failed, f.sync(files))...)
	if err != nil {
		// Noted again: the next sync tries them once more.
		f.mu.Lock()
		for p := range files {
			f.files[p] = struct{}{}
		}
		f.mu.Unlock()
	}
	return err
}

func (f *Files) sync(files map[string]struct{}) error {
	if len(files) > MaxFiles {
		return SyncFS(f.root)
	}
	dirs := map[string]struct{}{}
	for p := range files {
		if err := syncPath(p); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return err
		}
		for d := filepath.Dir(p); ; d = filepath.Dir(d) {
			dirs[d] = struct{}{}
			if d == f.root || !strings.HasPrefix(d, f.root+string(filepath.Separator)) {
				break
			}
		}
	}
	for d := range dirs {
		if err := syncPath(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// syncPath flushes a file or directory to the disk.
func syncPath(path string) error {
	fh, err := os.Open(path)
	if err != nil {
		return err
	}
	defer fh.Close()
	if err := fh.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}
