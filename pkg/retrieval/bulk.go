package retrieval

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	msmux "github.com/multiformats/go-multistream"
)

// bulkStreams is the host the gateway's HTTP client opens its streams
// through. Two peers often hold two connections, one over TCP and one over
// QUIC (each dialed the other, or mDNS found one after a --peer dial), and
// libp2p then opens a stream on either. A CAR stream of a whole blob goes
// over TCP: on loopback a 95 MB pull over quic-go took 1.0 s against
// 0.5–0.6 s over TCP, at almost twice the CPU (docs/benchmarks.md).
type bulkStreams struct{ host.Host }

// negotiateWait bounds protocol negotiation on a stream whose context has
// no deadline of its own.
const negotiateWait = 10 * time.Second

func (h bulkStreams) NewStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error) {
	conn := tcpAmongMany(h.Network().ConnsToPeer(p))
	if conn == nil {
		return h.Host.NewStream(ctx, p, pids...)
	}
	s, err := conn.NewStream(ctx)
	if err != nil {
		return h.Host.NewStream(ctx, p, pids...)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(negotiateWait)
	}
	_ = s.SetDeadline(deadline)
	proto, err := msmux.SelectOneOf(pids, s)
	if err == nil {
		err = s.SetProtocol(proto)
	}
	if err != nil {
		s.ResetWithError(network.StreamProtocolNegotiationFailed)
		return nil, fmt.Errorf("open %v stream to %s: %w", pids, p, err)
	}
	_ = s.SetDeadline(time.Time{})
	return s, nil
}

// tcpAmongMany is the open, unlimited TCP connection among several to one
// peer; nil if there is only one connection or none over TCP.
func tcpAmongMany(conns []network.Conn) network.Conn {
	if len(conns) < 2 {
		return nil
	}
	for _, c := range conns {
		if c.IsClosed() || c.Stat().Limited {
			continue
		}
		if _, err := c.RemoteMultiaddr().ValueForProtocol(ma.P_TCP); err == nil {
			return c
		}
	}
	return nil
}
