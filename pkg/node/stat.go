package node

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"syscall"
)

// SwarmStat is what the node's swarm carries: who is connected and how
// many bytes went each way, in total and by protocol.
type SwarmStat struct {
	// Peers are the peers connected now.
	Peers int
	// Received and Sent are the bytes of every stream, headers of the
	// transports excluded.
	Received, Sent int64
	// ByProtocol splits them by protocol ID; streams that never agreed on
	// a protocol are left out.
	ByProtocol map[string]ProtocolStat
}

// ProtocolStat are one protocol's bytes in and out.
type ProtocolStat struct{ Received, Sent int64 }

// SwarmStat reports the swarm; the node must be online.
func (n *Node) SwarmStat() (SwarmStat, error) {
	if n.host == nil {
		return SwarmStat{}, ErrOffline
	}
	total := n.bandwidth.GetBandwidthTotals()
	s := SwarmStat{
		Peers:    len(n.host.Network().Peers()),
		Received: total.TotalIn, Sent: total.TotalOut,
		ByProtocol: map[string]ProtocolStat{},
	}
	for p, st := range n.bandwidth.GetBandwidthByProtocol() {
		if p == "" {
			continue
		}
		s.ByProtocol[string(p)] = ProtocolStat{Received: st.TotalIn, Sent: st.TotalOut}
	}
	return s, nil
}

// StoredBytes is the disk space the node's stores take: blocks, packs and
// the datastore of pins and records. It walks the directories, so callers
// that ask often keep the answer for a while.
func (n *Node) StoredBytes(ctx context.Context) (int64, error) {
	var total int64
	for _, dir := range []string{"blocks", "blocks-pebble", "packs", "datastore"} {
		err := filepath.WalkDir(filepath.Join(n.home, dir), func(_ string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil // gone while walking, or a store this node does not use
				}
				return err
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if d.IsDir() {
				return nil
			}
			info, err := d.Info()
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			// What the file holds on disk: sparse and preallocated files
			// count as the blocks they use.
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				total += st.Blocks * 512
			} else {
				total += info.Size()
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	return total, nil
}
