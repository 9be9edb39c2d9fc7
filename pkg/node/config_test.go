package node

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/shoal-ipfs/shoal/pkg/config"
)

func TestLockKeepsASecondProcessOut(t *testing.T) {
	home := t.TempDir()
	if _, err := config.Init(home, config.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	n, err := Open(t.Context(), home, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(t.Context(), home, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n, err = Open(t.Context(), home, Options{})
	if err != nil {
		t.Fatalf("open after close: %v", err)
	}
	n.Close()
}

func TestOpenUninitialized(t *testing.T) {
	home := filepath.Join(t.TempDir(), "nothing")
	if _, err := Open(t.Context(), home, Options{}); !errors.Is(err, config.ErrNotInitialized) {
		t.Fatalf("open of empty home: %v", err)
	}
	if _, err := os.Stat(home); err == nil {
		t.Fatal("a failed open created the home")
	}
}
