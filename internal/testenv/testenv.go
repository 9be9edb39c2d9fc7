// Package testenv checks what a test needs of the machine. A missing
// prerequisite fails the test in CI (CI=true) and skips it elsewhere, so
// that it never turns CI green silently.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// Need stops tb when err says that what is not available.
func Need(tb testing.TB, what string, err error) {
	tb.Helper()
	if err == nil {
		return
	}
	msg := fmt.Sprintf("%s is not available: %v (CI runs as root, and make test installs what the tests use)", what, err)
	if os.Getenv("CI") == "true" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
}

// Root needs the test to run as root.
func Root(tb testing.TB) {
	tb.Helper()
	var err error
	if os.Geteuid() != 0 {
		err = fmt.Errorf("running as uid %d", os.Geteuid())
	}
	Need(tb, "root", err)
}

// FUSE needs the test to be able to mount FUSE filesystems as root.
func FUSE(tb testing.TB) {
	tb.Helper()
	Root(tb)
	_, err := os.Stat("/dev/fuse")
	Need(tb, "FUSE", err)
}

// Tool needs the program name on PATH and returns its path.
func Tool(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	Need(tb, name, err)
	return p
}
