package config

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/shoal-ipfs/shoal/internal/errkind"
)

// DefaultHome is $SHOAL_HOME, else ~/.local/share/shoal.
func DefaultHome() string {
	if h := os.Getenv("SHOAL_HOME"); h != "" {
		return h
	}
	if d, err := os.UserHomeDir(); err == nil {
		return filepath.Join(d, ".local", "share", "shoal")
	}
	return "/var/lib/shoal"
}

// ErrNotInitialized is returned when home holds no shoal state.
var ErrNotInitialized = errkind.New("not initialized", errdefs.ErrFailedPrecondition)

// Init creates the state directory with a new identity and default config.
// It is idempotent: an existing home is left as it is.
func Init(home string, cfg Config) (created bool, err error) {
	if err := cfg.Validate(); err != nil {
		return false, err
	}
	if err := os.MkdirAll(home, 0o700); err != nil {
		return false, fmt.Errorf("init %s: %w", home, err)
	}
	keyPath := filepath.Join(home, "identity.key")
	if _, err := os.Stat(keyPath); err == nil {
		return false, nil
	}
	// Commands started at once on a new home (`shoal daemon &` and the
	// next command) each initialise it: one at a time, or both would
	// write an identity and one would run under a key that is not on
	// disk.
	unlock, err := lockInit(home)
	if err != nil {
		return false, fmt.Errorf("init %s: %w", home, err)
	}
	defer unlock()
	if _, err := os.Stat(keyPath); err == nil {
		return false, nil
	}
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return false, err
	}
	raw, err := crypto.MarshalPrivateKey(priv)
	if err != nil {
		return false, err
	}
	if err := writeConfig(home, cfg); err != nil && !errors.Is(err, fs.ErrExist) {
		return false, fmt.Errorf("init %s: %w", home, err)
	}
	if err := WriteFileDurably(keyPath, raw, 0o600); err != nil {
		return false, fmt.Errorf("init %s: %w", home, err)
	}
	return true, nil
}

// lockInit waits for an exclusive lock on home's initialisation; the
// daemon's lock on the store (lockRepo) is another, held as long as it
// runs.
func lockInit(home string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(home, "init.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// WriteFileDurably replaces path with data so that a crash or a power cut
// leaves either the old file or the whole new one, on the disk: a home
// whose identity was lost in the page cache could not start again.
func WriteFileDurably(path string, data []byte, perm os.FileMode) error {
	// A name of its own: two writers of path must not rename each
	// other's half-written files.
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

// PeerID reads the peer ID of the node under home without opening its store.
func PeerID(home string) (peer.ID, error) {
	priv, err := LoadIdentity(home)
	if err != nil {
		return "", err
	}
	return peer.IDFromPrivateKey(priv)
}

// LoadIdentity reads the node's private key under home.
func LoadIdentity(home string) (crypto.PrivKey, error) {
	raw, err := os.ReadFile(filepath.Join(home, "identity.key"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w (run `shoal init`)", home, ErrNotInitialized)
	}
	if err != nil {
		return nil, err
	}
	return crypto.UnmarshalPrivateKey(raw)
}
