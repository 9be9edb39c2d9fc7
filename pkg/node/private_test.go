package node

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/shoal-ipfs/shoal/pkg/config"
)

// inGroup configures a node holding key (none if nil) and allowing only
// allow (anyone if empty).
func inGroup(key []byte, allow ...string) func(string, *config.Config) {
	return func(home string, cfg *config.Config) {
		if key != nil {
			if err := os.WriteFile(filepath.Join(home, "swarm.key"), key, 0o600); err != nil {
				panic(err)
			}
		}
		cfg.Swarm.Allow = allow
	}
}

// fetches reports whether n gets c from its peers within a few seconds.
func fetches(n *Node, c cid.Cid) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	rc, err := n.Cat(ctx, c)
	if err != nil {
		return false
	}
	defer rc.Close()
	_, err = io.ReadAll(rc)
	return err == nil
}

func connects(n, to *Node) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return n.Connect(ctx, peer.AddrInfo{ID: to.host.ID(), Addrs: to.host.Addrs()}) == nil
}

func TestPrivateNetworkKeepsOutsidersOut(t *testing.T) {
	key, err := NewSwarmKey()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewSwarmKey()
	a := onlineNodeWith(t, inGroup(key))
	c, err := a.Add(context.Background(), bytes.NewReader(bytes.Repeat([]byte("private "), 100_000)))
	if err != nil {
		t.Fatal(err)
	}
	member := onlineNodeWith(t, inGroup(key))
	if !connects(member, a) || !fetches(member, c) {
		t.Fatal("a holder of the key cannot fetch from the group")
	}
	for name, outsider := range map[string]*Node{
		"no key":      onlineNodeWith(t, inGroup(nil)),
		"another key": onlineNodeWith(t, inGroup(other)),
	} {
		if connects(outsider, a) || fetches(outsider, c) {
			t.Errorf("%s: an outsider reached the group", name)
		}
	}
	for _, addr := range a.host.Addrs() {
		if _, err := addr.ValueForProtocol(0x01cc); err == nil { // quic-v1
			t.Errorf("a private node listens on QUIC: %s", addr)
		}
	}
}

func TestAllowlistAdmitsOnlyItsPeers(t *testing.T) {
	friend := onlineNode(t)
	a := onlineNodeWith(t, inGroup(nil, friend.host.ID().String()))
	c, err := a.Add(context.Background(), bytes.NewReader([]byte("for friends")))
	if err != nil {
		t.Fatal(err)
	}
	stranger := onlineNode(t)
	if !connects(friend, a) || !fetches(friend, c) {
		t.Error("a listed peer cannot fetch")
	}
	// The stranger's side of the handshake may finish before the node
	// drops it: what counts is that it gets nothing and stays off.
	connects(stranger, a)
	if fetches(stranger, c) {
		t.Error("a peer not on the list fetched")
	}
	if len(a.host.Network().ConnsToPeer(stranger.host.ID())) != 0 {
		t.Error("a peer not on the list is connected")
	}
	if connects(a, stranger) {
		t.Error("the node dialled a peer not on its list")
	}
}

func TestBadSwarmKeyIsAClearError(t *testing.T) {
	home := t.TempDir()
	cfg := config.DefaultConfig()
	cfg.Swarm.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.Swarm.MDNS = false
	if _, err := config.Init(home, cfg); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(home, "swarm.key"), []byte("not a key"), 0o600)
	if _, err := Open(context.Background(), home, Options{Online: true}); err == nil {
		t.Fatal("opened with a garbage swarm key")
	}
	if _, err := config.ParseConfig([]byte("[swarm]\nallow = [\"nonsense\"]\n")); err == nil {
		t.Fatal("accepted a garbage peer ID in swarm.allow")
	}
}

// TestSwarmKeyOthersCanReadIsRefused: a swarm key readable or writable
// by anyone but its owner is refused, with the chmod that fixes it.
func TestSwarmKeyOthersCanReadIsRefused(t *testing.T) {
	key, _ := NewSwarmKey()
	path := filepath.Join(t.TempDir(), "swarm.key")
	if err := os.WriteFile(path, key, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true}, {0o400, true}, {0o644, false}, {0o640, false}, {0o604, false}, {0o620, false}, {0o602, false},
	} {
		if err := os.Chmod(path, c.mode); err != nil {
			t.Fatal(err)
		}
		psk, err := loadSwarmKey(path)
		switch {
		case c.ok && (err != nil || len(psk) != 32):
			t.Errorf("mode %04o: %v", c.mode, err)
		case !c.ok && err == nil:
			t.Errorf("mode %04o: a swarm key others can reach was taken", c.mode)
		case !c.ok && !(strings.Contains(err.Error(), path) && strings.Contains(err.Error(), fmt.Sprintf("%04o", c.mode)) && strings.Contains(err.Error(), "chmod 600 "+path)):
			t.Errorf("mode %04o: the error names neither the file, its mode nor the fix: %v", c.mode, err)
		}
	}
}

func FuzzParseSwarmKey(f *testing.F) {
	key, _ := NewSwarmKey()
	f.Add(key)
	f.Add([]byte("/key/swarm/psk/1.0.0/\n/base64/\nAAAA\n"))
	f.Add([]byte("/key/swarm/psk/1.0.0/\n/bin/\n\x00\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		psk, err := ParseSwarmKey(data)
		if err == nil && len(psk) != 32 {
			t.Fatalf("accepted a %d-byte key", len(psk))
		}
	})
}
