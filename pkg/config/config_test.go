package config

import (
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("[swarm]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nmdns = false\n[import]\nlayout = \"unixfs-v1-2025\"\n"))
	f.Add([]byte("[datastore]\nblocks = \"leveldb\"\n"))
	f.Add([]byte("nonsense = 1"))
	f.Add([]byte("[mount]\nfile-cache = \"/var/cache/shoal\"\nfile-cache-size = \"512MiB\"\n"))
	f.Add([]byte("[mount]\nfile-cache-size = \"99999999999TiB\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err == nil {
			if err := c.Validate(); err != nil {
				t.Fatalf("accepted config does not validate: %v", err)
			}
			text, _ := c.Mount.FileCacheSize.MarshalText()
			var back Size
			if err := back.UnmarshalText(text); err != nil || back != c.Mount.FileCacheSize {
				t.Fatalf("size %d written as %q reads back as %d, %v", c.Mount.FileCacheSize, text, back, err)
			}
		}
	})
}

func TestSizeReadsUnits(t *testing.T) {
	for text, want := range map[string]Size{"0": 0, "4096": 4096, "4GiB": 4 << 30, "512 MiB": 512 << 20, "3KiB": 3072, "7B": 7, "2TiB": 2 << 40} {
		var s Size
		if err := s.UnmarshalText([]byte(text)); err != nil || s != want {
			t.Errorf("%q: %d, %v; want %d", text, s, err, want)
		}
	}
	for _, text := range []string{"", "-1", "4GB", "1.5GiB", "GiB", "9999999999TiB"} {
		var s Size
		if err := s.UnmarshalText([]byte(text)); err == nil {
			t.Errorf("%q read as %d", text, s)
		}
	}
	if text, _ := Size(4 << 30).MarshalText(); string(text) != "4GiB" {
		t.Errorf("4 GiB written as %q", text)
	}
}

func TestConfigRejectsUnknownSettings(t *testing.T) {
	_, err := ParseConfig([]byte("[swarm]\nlisen = []\n"))
	if err == nil || !strings.Contains(err.Error(), "lisen") {
		t.Fatalf("typo in config: %v", err)
	}
}

// Commands started at once on a new home each initialise it: one of them
// creates it, the others find it made, and every one of them sees the
// identity that is on the disk.
func TestConcurrentInitsMakeOneHome(t *testing.T) {
	for round := 0; round < 20; round++ {
		home := filepath.Join(t.TempDir(), "home")
		const n = 6
		created := make(chan bool, n)
		errs := make(chan error, n)
		ids := make(chan string, n)
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				c, err := Init(home, DefaultConfig())
				if err != nil {
					errs <- err
					return
				}
				created <- c
				id, err := PeerID(home)
				if err != nil {
					errs <- err
					return
				}
				ids <- id.String()
			})
		}
		wg.Wait()
		close(errs)
		close(created)
		close(ids)
		for err := range errs {
			t.Fatalf("round %d: %v", round, err)
		}
		made := 0
		for c := range created {
			if c {
				made++
			}
		}
		if made != 1 {
			t.Fatalf("round %d: %d inits said they created the home", round, made)
		}
		first := ""
		for id := range ids {
			if first == "" {
				first = id
			} else if id != first {
				t.Fatalf("round %d: identities %s and %s", round, first, id)
			}
		}
		if left, _ := filepath.Glob(filepath.Join(home, "*.tmp")); len(left) > 0 {
			t.Fatalf("round %d: left %v", round, left)
		}
	}
}
