package node

import (
	"time"

	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	yamuxconfig "github.com/libp2p/go-yamux/v5"
)

// rttInterval is how often the muxer measures each connection's round
// trip: every second rather than yamux's 30 s.
//
// yamux grows a stream's receive window (from 256 KiB up to 16 MiB, each
// step reserved with the resource manager) only while window updates go
// out within four round trips of one another, and it knows the round trip
// from a ping, taken when the connection opens, idle. A busy link's round
// trip is many times that. A node that receives a blob at its link's rate
// while it sends the same blob on, as a mirror passing a layer along a
// chain of peers does, then keeps a window too small for its loaded round
// trip: on the testbed such a hop ran at 9.8 MB/s beside 11.7 MB/s from
// the registry over the same links. Measured every second, the round trip
// follows the load, the window grows to what the link needs, and the
// cost is one 12-byte ping a second on each connection.
const rttInterval = time.Second

// muxer is libp2p's yamux with the round trip measured every rttInterval.
func muxer() *yamux.Transport {
	cfg := *(*yamuxconfig.Config)(yamux.DefaultTransport)
	cfg.MeasureRTTInterval = rttInterval
	return (*yamux.Transport)(&cfg)
}
