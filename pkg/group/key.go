package group

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"

	"github.com/containerd/errdefs"
	"github.com/shoal-ipfs/shoal/internal/errkind"
	"github.com/shoal-ipfs/shoal/internal/secretfile"
)

// A group key is the secret every member of a group holds. Members prove
// it to each other on every stream (auth.go), so a peer that only knows
// the group's name can neither count as a member nor touch its records.
// It is kept apart from the swarm key: a private network's key admits
// every node of the network (pullers, members of other groups), while a
// group key is given to the group's members only.

// KeySize is the length of a group key.
const KeySize = 32

// keyHeader starts a group key file, so that a swarm key (or any other
// file) given by mistake is refused rather than used.
const keyHeader = "/key/shoal/group/1.0.0/\n/base16/\n"

// ErrNoKey is returned by LoadKey when there is no key file.
var ErrNoKey = errkind.New("no group key", errdefs.ErrFailedPrecondition)

// NewKey returns a new random group key in the file format LoadKey reads.
func NewKey() ([]byte, error) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	return []byte(keyHeader + hex.EncodeToString(k) + "\n"), nil
}

// ParseKey reads a group key file's contents.
func ParseKey(data []byte) ([]byte, error) {
	rest, ok := bytes.CutPrefix(data, []byte(keyHeader))
	if !ok {
		return nil, errors.New("group key: not a group key file (`shoal group key` prints one)")
	}
	digits := bytes.TrimSpace(rest)
	if len(digits) != 2*KeySize {
		return nil, fmt.Errorf("group key: want %d hex digits, have %d characters", 2*KeySize, len(digits))
	}
	key := make([]byte, KeySize)
	if _, err := hex.Decode(key, digits); err != nil {
		return nil, fmt.Errorf("group key: %w", err)
	}
	return key, nil
}

// LoadKey reads the group key file at path. It refuses a file that anyone
// but its owner may read or write: the key is all a member proves.
func LoadKey(path string) ([]byte, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: [group] key names no file", ErrNoKey)
	}
	data, err := secretfile.Read("group key", path, 1024)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist. Every member of a group needs the same group key: make one with `shoal group key > group.key`, then `install -m 0600 group.key %s` on every member", ErrNoKey, path, path)
	}
	if err != nil {
		return nil, err
	}
	key, err := ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}
