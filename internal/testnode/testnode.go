// Package testnode opens shoal nodes for tests: on loopback, without mDNS,
// in temporary homes.
package testnode

import (
	"context"
	"strings"
	"testing"

	"github.com/shoal-ipfs/shoal/pkg/config"
	"github.com/shoal-ipfs/shoal/pkg/node"
)

// Online opens a node in a new temporary home, listening on loopback TCP
// and QUIC and connected to peers over the first of their addresses that
// contains proto ("/tcp/" or "/quic-v1"). It is closed when the test ends.
func Online(tb testing.TB, proto string, peers ...*node.Node) *node.Node {
	tb.Helper()
	return OnlineWith(tb, nil, proto, peers...)
}

// OnlineWith is Online with configure changing the node's config (in its
// home, where it may also write files) before the node opens.
func OnlineWith(tb testing.TB, configure func(home string, cfg *config.Config), proto string, peers ...*node.Node) *node.Node {
	tb.Helper()
	return OnlineWithOptions(tb, node.Options{}, configure, proto, peers...)
}

// OnlineWithOptions is OnlineWith opening the node with opts (Online and
// Peers set here): Announce, to be a daemon on the DHT, say.
func OnlineWithOptions(tb testing.TB, opts node.Options, configure func(home string, cfg *config.Config), proto string, peers ...*node.Node) *node.Node {
	tb.Helper()
	home := tb.TempDir()
	initHomeWith(tb, home, configure)
	var addrs []string
	for _, p := range peers {
		id, err := p.ID(context.Background())
		if err != nil {
			tb.Fatal(err)
		}
		for _, a := range id.Addresses {
			if strings.Contains(a, proto) {
				addrs = append(addrs, a)
				break
			}
		}
	}
	if len(addrs) != len(peers) {
		tb.Fatalf("not every peer listens on %s", proto)
	}
	opts.Online, opts.Peers = true, addrs
	n, err := node.Open(context.Background(), home, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { n.Close() })
	return n
}

// Offline opens the node at home, initialising it first if need be; the
// caller closes it, and may open it again.
func Offline(tb testing.TB, home string) *node.Node {
	tb.Helper()
	initHome(tb, home)
	n, err := node.Open(context.Background(), home, node.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

func initHome(tb testing.TB, home string) { initHomeWith(tb, home, nil) }

func initHomeWith(tb testing.TB, home string, configure func(home string, cfg *config.Config)) {
	tb.Helper()
	cfg := config.DefaultConfig()
	cfg.Swarm.Listen = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	cfg.Swarm.MDNS = false
	if configure != nil {
		configure(home, &cfg)
	}
	if _, err := config.Init(home, cfg); err != nil {
		tb.Fatal(err)
	}
}

// Blocks counts the blocks n stores.
func Blocks(tb testing.TB, n *node.Node) int {
	tb.Helper()
	keys, err := n.Blockstore().AllKeysChan(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	count := 0
	for range keys {
		count++
	}
	return count
}
