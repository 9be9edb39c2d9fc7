//go:build linux

package node

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// A pin or hold makes the blocks it names durable before it records them,
// so that after a crash or a power cut a pinned image's blocks are on the
// disk whatever the sync setting. One syncfs of the store's file system
// does it for every pack and block file written since the last, however
// many: fsyncing each as it is written ([datastore] sync) costs a flush
// per block instead. What a crash catches before the pin (a pack whose
// bytes never reached the disk though its index did) is found corrupt on
// reading, dropped and fetched again: it is never served.
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync store: %w", err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("sync store %s: %w", dir, err)
	}
	return nil
}
