//go:build !linux

package packs

import (
	"errors"
	"os"
)

var errRefused = errors.New("O_DIRECT refused")

// openDirect: direct writes are only made on Linux.
func openDirect(string) *os.File { return nil }

func writeDirect(*os.File, [][]byte, int64) (int, error) { return 0, errRefused }

// dataSync flushes f to the disk.
var dataSync = (*os.File).Sync
