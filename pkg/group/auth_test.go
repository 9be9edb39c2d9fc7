package group

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/shoal-ipfs/shoal/pkg/node"
)

// handshake runs dial on one end of a pipe and accept on the other, each
// with its own keyring, and returns what each side made of it.
func handshake(t *testing.T, dialer, server keyring, dialerID, serverID peer.ID) (dialErr, acceptErr error) {
	t.Helper()
	c1, c2 := net.Pipe()
	done := make(chan error, 1)
	go func() {
		defer c2.Close()
		done <- server.accept(newLines(c2), serverID, dialerID)
	}()
	dialErr = dialer.dial(newLines(c1), dialerID, serverID)
	c1.Close()
	return dialErr, <-done
}

// TestHandshakeProvesTheKeyBothWays: two holders of the key accept each
// other; with different keys each side refuses the other as no member,
// and the dialer sends nothing but its nonce.
func TestHandshakeProvesTheKeyBothWays(t *testing.T) {
	k := keyring{key: testKey, proto: Protocol("test")}
	other := keyring{key: bytes.Repeat([]byte{7}, KeySize), proto: Protocol("test")}
	a, b := peer.ID("member-a"), peer.ID("member-b")
	if d, s := handshake(t, k, k, a, b); d != nil || s != nil {
		t.Fatalf("same key: dial %v, accept %v", d, s)
	}
	if d, s := handshake(t, k, other, a, b); !errors.Is(d, errNotMember) || s == nil {
		t.Errorf("server with another key: dial %v, accept %v; want both refused", d, s)
	}
	if d, s := handshake(t, other, k, a, b); d == nil || s == nil {
		t.Errorf("dialer with another key: dial %v, accept %v; want both refused", d, s)
	}
	if d, s := handshake(t, k, keyring{key: testKey, proto: Protocol("other")}, a, b); d == nil || s == nil {
		t.Errorf("another group with the same key: dial %v, accept %v; want both refused", d, s)
	}
}

// TestProofsAreBoundToBothPeers: a proof made by a for b serves neither b
// for a, nor a for c, nor another nonce or group.
func TestProofsAreBoundToBothPeers(t *testing.T) {
	k := keyring{key: testKey, proto: Protocol("test")}
	n := bytes.Repeat([]byte{1}, nonceSize)
	p := k.mac(n, "a", "b")
	for name, q := range map[string][]byte{
		"the other way round": k.mac(n, "b", "a"),
		"for another peer":    k.mac(n, "a", "c"),
		"another nonce":       k.mac(bytes.Repeat([]byte{2}, nonceSize), "a", "b"),
		"another group":       keyring{key: testKey, proto: Protocol("other")}.mac(n, "a", "b"),
		"shifted peer IDs":    k.mac(n, "ab", ""),
	} {
		if bytes.Equal(p, q) {
			t.Errorf("the proof serves %s", name)
		}
	}
}

// TestAnOutsiderGetsNothingButANonce: a server that cannot prove the key
// hears only the dialer's nonce, never a proof or a request.
func TestAnOutsiderGetsNothingButANonce(t *testing.T) {
	k := keyring{key: testKey, proto: Protocol("test")}
	c1, c2 := net.Pipe()
	heard := make(chan []byte, 1)
	go func() {
		defer c2.Close()
		r := bufio.NewReader(c2)
		line, _ := r.ReadBytes('\n')
		_ = encodeMessage(c2, hello{Nonce: bytes.Repeat([]byte{1}, nonceSize), Proof: bytes.Repeat([]byte{2}, 32)})
		rest, _ := io.ReadAll(r)
		heard <- append(line, rest...)
	}()
	err := k.dial(newLines(c1), "member", "outsider")
	c1.Close()
	if !errors.Is(err, errNotMember) {
		t.Fatalf("dial to an outsider: %v", err)
	}
	var h hello
	if got := <-heard; strings.Count(string(got), "\n") != 1 || decodeMessage(bytes.NewReader(got), &h) != nil || len(h.Nonce) != nonceSize || h.Proof != nil {
		t.Errorf("the outsider heard %q", got)
	}
}

// TestMessagesAreBounded: a line over the bound is refused as malformed
// whatever follows; one within it is read, the next left for later.
func TestMessagesAreBounded(t *testing.T) {
	long := strings.Repeat("x", maxHandshake+1) + "\n"
	if _, err := readLine(bufio.NewReaderSize(strings.NewReader(long), 16), maxHandshake); !errors.Is(err, errMalformed) {
		t.Errorf("a line over the bound: %v", err)
	}
	exact := strings.Repeat("x", maxHandshake) + "\nnext\n"
	r := bufio.NewReaderSize(strings.NewReader(exact), 16)
	if line, err := readLine(r, maxHandshake); err != nil || len(line) != maxHandshake+1 {
		t.Errorf("a line at the bound: %d bytes, %v", len(line), err)
	}
	if line, err := readLine(r, maxHandshake); err != nil || string(line) != "next\n" {
		t.Errorf("the next line: %q, %v", line, err)
	}
	k := keyring{key: testKey, proto: Protocol("test")}
	cut := struct {
		io.Reader
		io.Writer
	}{strings.NewReader(`{"Nonce":"AQEBAQEBAQEBAQEB`), io.Discard}
	if err := k.accept(newLines(cut), "member", "crashed"); !errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, errNotMember) {
		t.Errorf("a handshake cut short: %v; want a broken stream, not an outsider", err)
	}
}

// TestGroupKeyFiles: a new key reads back; a missing file, one others may
// read, a swarm key and a truncated key are refused, each saying why.
func TestGroupKeyFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return p
	}
	data, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := NewKey(); bytes.Equal(again, data) {
		t.Fatal("two new keys alike")
	}
	for _, mode := range []os.FileMode{0o600, 0o400} {
		key, err := LoadKey(write("ok", data, mode))
		if err != nil || len(key) != KeySize {
			t.Errorf("a good key of mode %04o: %d bytes, %v", mode, len(key), err)
		}
		os.Remove(filepath.Join(dir, "ok"))
	}
	swarm, err := node.NewSwarmKey()
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		path string
		want string
	}{
		"missing":        {filepath.Join(dir, "nosuch"), "shoal group key"},
		"no path":        {"", "names no file"},
		"group-readable": {write("g", data, 0o640), "chmod 600"},
		"world-readable": {write("w", data, 0o644), "chmod 600"},
		"a swarm key":    {write("s", swarm, 0o600), "not a group key file"},
		"truncated":      {write("t", data[:len(data)-10], 0o600), "hex digits"},
		"a directory":    {dir, "not a regular file"},
	} {
		if _, err := LoadKey(c.path); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want an error saying %q", name, err, c.want)
		}
	}
	if _, err := LoadKey(filepath.Join(dir, "nosuch")); !errors.Is(err, ErrNoKey) {
		t.Errorf("a missing key is not ErrNoKey: %v", err)
	}
}

// FuzzGroupHandshake: whatever a peer without the key sends, as the dialer
// or as the server, the handshake refuses it, and reading it never
// panics.
func FuzzGroupHandshake(f *testing.F) {
	f.Add([]byte(`{"Nonce":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="}` + "\n" + `{"Proof":"AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="}` + "\n"))
	f.Add([]byte(`{"Nonce":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=","Proof":"AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="}` + "\n"))
	f.Add([]byte(`{"Op":"sync","Shards":[{"Root":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy","Replicas":0,"Updated":"2076-01-01T00:00:00Z"}]}` + "\n"))
	f.Add([]byte("{}\n{}\n"))
	k := keyring{key: testKey, proto: Protocol("test")}
	f.Fuzz(func(t *testing.T, data []byte) {
		rw := struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(data), io.Discard}
		if err := k.accept(newLines(rw), "member", "outsider"); err == nil {
			t.Fatalf("accepted %q as a member's handshake", data)
		}
		rw.Reader = bytes.NewReader(data)
		if err := k.dial(newLines(rw), "member", "outsider"); err == nil {
			t.Fatalf("accepted %q as a member's answer", data)
		}
	})
}
