package node

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/shoal-ipfs/shoal/internal/errkind"
)

// ErrLocked is returned when another process owns the store.
var ErrLocked = errkind.New("store is in use by another shoal process", errdefs.ErrUnavailable)

// ErrOffline is the error of what needs the network on a node opened
// without it.
var ErrOffline = errkind.New("node is offline", errdefs.ErrUnavailable)

// lockRepo takes an exclusive advisory lock on home, waiting up to wait for
// a short-lived holder (a command that opened the store) to let go. The
// kernel drops the lock when its process dies, so a crash never leaves a
// stale lock behind.
func lockRepo(home string, wait time.Duration) (*os.File, error) {
	p := filepath.Join(home, "repo.lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		owner, _ := os.ReadFile(p)
		f.Close()
		pid := strings.TrimSpace(string(owner))
		return nil, fmt.Errorf("%s: %w (pid %s); use its daemon or stop it", home, ErrLocked, pid)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}
