package node

import (
	"context"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"
	"github.com/shoal-ipfs/shoal/pkg/config"
	"github.com/shoal-ipfs/shoal/pkg/routing"
)

// startDHT joins the DHT of mode, unless it is off. A daemon (announce) is
// a DHT server and announces the images it holds; other commands only ask.
func (n *Node) startDHT(mode string, announce bool) error {
	if mode == config.DHTOff {
		return nil
	}
	d, err := routing.NewDHT(n.host, routing.DHTOptions{
		Mode: mode, Announce: announce, Held: n.heldBlobs,
		Store: namespace.Wrap(n.meta, ds.NewKey("/shoal/dht")), Log: n.log,
	})
	if err != nil {
		return err
	}
	n.dht = d
	return nil
}

// heldBlobs is what a daemon announces: the blobs of every pinned image.
func (n *Node) heldBlobs(ctx context.Context) ([]cid.Cid, error) {
	imgs, err := n.Images(ctx)
	if err != nil {
		return nil, err
	}
	var out []cid.Cid
	for _, img := range imgs {
		cs, err := decodeCIDs(img.Blobs)
		if err != nil {
			continue
		}
		out = append(out, cs...)
	}
	return out, nil
}

// Router finds holders of content beyond the connected peers, and
// announces what this node holds: its DHT; nil when it has none.
func (n *Node) Router() routing.Router {
	if n.dht == nil {
		return nil
	}
	return n.dht
}

// DHT is the node's DHT, nil when it has none.
func (n *Node) DHT() *routing.DHT { return n.dht }

// Provide announces that this node holds cids, in the background; it does
// nothing unless the node is a daemon on a DHT.
func (n *Node) Provide(cids ...cid.Cid) {
	if n.dht != nil {
		n.dht.Provide(cids...)
	}
}

// DHTStat reports the DHT's state; its mode is "off" when there is none.
func (n *Node) DHTStat() routing.DHTStat {
	if n.dht == nil {
		return routing.DHTStat{Mode: config.DHTOff}
	}
	return n.dht.Stat()
}
