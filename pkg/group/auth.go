package group

import (
	"bufio"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Every stream of the group protocol starts with a mutual proof that both
// ends hold the group key, before any request:
//
//	dialer → server: {"Nonce": nd}
//	server → dialer: {"Nonce": ns, "Proof": mac(nd, server, dialer)}
//	dialer → server: {"Proof": mac(ns, dialer, server)}, then the request
//
// where mac(n, prover, verifier) is HMAC-SHA256 under the group key of the
// protocol ID, n, the prover's peer ID and the verifier's, each prefixed
// by its length. libp2p's secure channel has already authenticated both
// peer IDs, so a proof made between two peers serves neither another pair
// nor the same pair the other way round, and the fresh nonce of each side
// means no proof can be replayed. The server proves itself first: a
// dialer sends nothing but its nonce to a peer that has not proven the
// key, and a server reads no request from one that has not.

const (
	nonceSize = 32
	// maxHandshake bounds one handshake message: two base64 fields of 32
	// bytes and their names take under 150.
	maxHandshake = 256
)

// errNotMember is a peer that answered the handshake without proving the
// group key.
var errNotMember = errors.New("does not prove the group key")

type hello struct {
	Nonce []byte `json:"Nonce,omitempty"`
	Proof []byte `json:"Proof,omitempty"`
}

// keyring proves this member's key and checks others'.
type keyring struct {
	key   []byte
	proto protocol.ID
}

func (k keyring) mac(nonce []byte, prover, verifier peer.ID) []byte {
	m := hmac.New(sha256.New, k.key)
	for _, f := range [][]byte{[]byte(k.proto), nonce, []byte(prover), []byte(verifier)} {
		m.Write(binary.AppendUvarint(nil, uint64(len(f))))
		m.Write(f)
	}
	return m.Sum(nil)
}

func newNonce() ([]byte, error) {
	n := make([]byte, nonceSize)
	_, err := rand.Read(n)
	return n, err
}

// dial proves membership as the side that opened the stream to remote.
func (k keyring) dial(l *lines, self, remote peer.ID) error {
	nd, err := newNonce()
	if err != nil {
		return err
	}
	if err := l.write(hello{Nonce: nd}); err != nil {
		return err
	}
	var h hello
	if err := l.read(&h, maxHandshake); err != nil {
		return notMemberIfMalformed(err)
	}
	if len(h.Nonce) != nonceSize || !hmac.Equal(h.Proof, k.mac(nd, remote, self)) {
		return errNotMember
	}
	return l.write(hello{Proof: k.mac(h.Nonce, self, remote)})
}

// accept proves membership as the side that serves the stream, and checks
// that remote, which opened it, is a member.
func (k keyring) accept(l *lines, self, remote peer.ID) error {
	var h hello
	if err := l.read(&h, maxHandshake); err != nil {
		return notMemberIfMalformed(err)
	}
	if len(h.Nonce) != nonceSize || len(h.Proof) != 0 {
		return fmt.Errorf("%w: the first message is not a nonce", errNotMember)
	}
	ns, err := newNonce()
	if err != nil {
		return err
	}
	if err := l.write(hello{Nonce: ns, Proof: k.mac(h.Nonce, self, remote)}); err != nil {
		return err
	}
	var p hello
	if err := l.read(&p, maxHandshake); err != nil {
		return notMemberIfMalformed(err)
	}
	if len(p.Nonce) != 0 || !hmac.Equal(p.Proof, k.mac(ns, remote, self)) {
		return errNotMember
	}
	return nil
}

// errMalformed is a message that arrived whole but is not what the
// protocol sends: too long, or not the JSON expected.
var errMalformed = errors.New("malformed group message")

// notMemberIfMalformed tells a peer that speaks something else than the
// handshake (an outsider, an older version) from one whose stream broke.
func notMemberIfMalformed(err error) error {
	if errors.Is(err, errMalformed) {
		return fmt.Errorf("%w: %w", errNotMember, err)
	}
	return err
}

// lines is one stream of the group protocol: messages of one JSON line
// each, read through one buffer so that nothing read ahead is lost
// between them.
type lines struct {
	r *bufio.Reader
	w io.Writer
}

func newLines(rw io.ReadWriter) *lines { return &lines{r: bufio.NewReader(rw), w: rw} }

// read decodes one message of at most max bytes into v.
func (l *lines) read(v any, max int) error {
	line, err := readLine(l.r, max)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("%w: %w", errMalformed, err)
	}
	return nil
}

func (l *lines) write(v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = l.w.Write(append(data, '\n'))
	return err
}

// readLine reads up to and including the next newline, at most max bytes
// before it. Every message ends with one, so a stream that ends before it
// was cut short: that is an error of the stream, not a malformed message,
// and does not make a member that crashed mid-message an outsider.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := r.ReadSlice('\n')
		n := len(line) + len(frag)
		if err == nil {
			n-- // the newline
		}
		if n > max {
			return nil, fmt.Errorf("%w: over %d bytes", errMalformed, max)
		}
		line = append(line, frag...)
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF) && len(line) > 0:
			return nil, fmt.Errorf("read group message: %w", io.ErrUnexpectedEOF)
		default:
			return nil, fmt.Errorf("read group message: %w", err)
		}
	}
}
