package node

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/shoal-ipfs/shoal/internal/secretfile"
	"github.com/shoal-ipfs/shoal/pkg/retrieval"
)

// A private group is a set of nodes that share a swarm key (libp2p's
// pre-shared key, in kubo's swarm.key format): every connection is
// encrypted with it on top of the usual security, so only holders of the
// key can talk to the group, whatever addresses they find. An allowlist
// of peer IDs narrows it further.

// NewSwarmKey returns a new random swarm key in kubo's swarm.key format.
func NewSwarmKey() ([]byte, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	return []byte("/key/swarm/psk/1.0.0/\n/base16/\n" + hex.EncodeToString(k) + "\n"), nil
}

// ParseSwarmKey reads a swarm.key file's contents.
func ParseSwarmKey(data []byte) (pnet.PSK, error) {
	psk, err := pnet.DecodeV1PSK(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("swarm key: %w", err)
	}
	return psk, nil
}

// loadSwarmKey reads the swarm key at path, if there is one. A key that
// other users can read is no longer a secret of the group, and one they
// can write lets them move the node to their own group: either is
// refused, rather than run a private group that is not.
func loadSwarmKey(path string) (pnet.PSK, error) {
	if path == "" {
		return nil, nil
	}
	data, err := secretfile.Read("swarm key", path, 1024)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	psk, err := ParseSwarmKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return psk, nil
}

// withoutQUIC drops the QUIC addresses: libp2p's private networks run over
// TCP only, since QUIC brings its own encryption.
func withoutQUIC(addrs []string) []string {
	var out []string
	for _, a := range addrs {
		if !strings.Contains(a, "/quic") {
			out = append(out, a)
		}
	}
	return out
}

// swarmGater keeps off this node's swarm the peers caught sending bad
// blocks, so that neither the gateway nor bitswap asks them again, and,
// with an allowlist, every peer not on it.
type swarmGater struct {
	bad   *retrieval.BadPeers
	allow map[peer.ID]bool // nil: any peer
}

func (g swarmGater) ok(p peer.ID) bool {
	return !g.bad.Has(p) && (g.allow == nil || g.allow[p])
}

func (g swarmGater) InterceptPeerDial(p peer.ID) bool                 { return g.ok(p) }
func (g swarmGater) InterceptAddrDial(p peer.ID, _ ma.Multiaddr) bool { return g.ok(p) }
func (g swarmGater) InterceptAccept(network.ConnMultiaddrs) bool      { return true }
func (g swarmGater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.ok(p)
}
func (g swarmGater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) {
	return true, 0
}
