//go:build !linux

package durable

import "syscall"

// SyncFS flushes every file system: without syncfs, the nearest call.
func SyncFS(string) error {
	syscall.Sync()
	return nil
}
