package packs

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// errRefused is a direct write the file system will not do.
var errRefused = errors.New("O_DIRECT refused")

// openDirect opens the pack at path again for writing around the page
// cache, or returns nil where the file system cannot.
func openDirect(path string) *os.File {
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		return nil
	}
	return f
}

// writeDirect writes iovs at off in one call, returning how much of them
// it wrote (a short write leaves the rest for the caller).
func writeDirect(f *os.File, iovs [][]byte, off int64) (int, error) {
	const maxIovs = 1024 // IOV_MAX
	if len(iovs) > maxIovs {
		iovs = iovs[:maxIovs]
	}
	var n int
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	if cerr := rc.Write(func(fd uintptr) bool {
		n, err = unix.Pwritev(int(fd), iovs, off)
		return true // a regular file never asks to wait
	}); cerr != nil {
		return 0, cerr
	}
	if errors.Is(err, unix.EINVAL) {
		return 0, errRefused
	}
	return n, err
}

// dataSync flushes f's data, and what reading it back needs, to the disk.
var dataSync = func(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }
