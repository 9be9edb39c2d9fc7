package node

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("[swarm]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nmdns = false\n[import]\nlayout = \"unixfs-v1-2025\"\n"))
	f.Add([]byte("[datastore]\nblocks = \"leveldb\"\n"))
	f.Add([]byte("nonsense = 1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err == nil {
			if err := c.Validate(); err != nil {
				t.Fatalf("accepted config does not validate: %v", err)
			}
		}
	})
}

func TestConfigRejectsUnknownSettings(t *testing.T) {
	_, err := ParseConfig([]byte("[swarm]\nlisen = []\n"))
	if err == nil || !strings.Contains(err.Error(), "lisen") {
		t.Fatalf("typo in config: %v", err)
	}
}

func TestLockKeepsASecondProcessOut(t *testing.T) {
	home := t.TempDir()
	if _, err := Init(home, DefaultConfig()); err != nil {
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
	if _, err := Open(t.Context(), home, Options{}); !errors.Is(err, ErrNotInitialized) {
		t.Fatalf("open of empty home: %v", err)
	}
	if _, err := os.Stat(home); err == nil {
		t.Fatal("a failed open created the home")
	}
}
