// Package testproc runs the long-lived processes that tests and
// benchmarks need (daemons, registries, containerd): started, waited for
// until ready, and stopped when the test ends.
package testproc

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Logs is a process's output, written by the process while the test
// reads it.
type Logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Start starts cmd with its output going to the returned Logs, waits up
// to timeout until ready (given the output so far) says it is up, and
// stops it when tb ends.
func Start(tb testing.TB, cmd *exec.Cmd, timeout time.Duration, ready func(logs string) bool) *Logs {
	tb.Helper()
	what := filepath.Base(cmd.Path)
	logs := &Logs{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", what, err)
	}
	tb.Cleanup(func() { Stop(cmd) })
	deadline := time.Now().Add(timeout)
	for !ready(logs.String()) {
		if time.Now().After(deadline) {
			tb.Fatalf("%v did not start:\n%s", cmd.Args, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return logs
}

// Stop stops a process Start started, as a service manager would:
// SIGTERM, then SIGKILL if it has not ended in ten seconds. Stopping it
// again does nothing.
func Stop(cmd *exec.Cmd) {
	if cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}
