package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/shoal-ipfs/shoal/internal/testnode"
	"github.com/shoal-ipfs/shoal/pkg/blob"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/node"
	"github.com/shoal-ipfs/shoal/pkg/transport"
)

// BenchmarkProvide is what announcing the Debian image on the LAN DHT
// costs, with 16 daemons on loopback, each connected to one daemon before
// it: announcing the CIDs shoal announces (the image root and its blobs'
// roots) against announcing every block, as kubo's default reprovider
// strategy would. It also times a lookup from the last daemon.
func BenchmarkProvide(b *testing.B) {
	requireTools(b)
	const members = 16
	daemon := node.Options{Announce: true}
	nodes := []*node.Node{testnode.OnlineWithOptions(b, daemon, nil, "/tcp/")}
	for i := 1; i < members; i++ {
		nodes = append(nodes, testnode.OnlineWithOptions(b, daemon, nil, "/tcp/", nodes[rand.IntN(i)]))
	}
	holder := nodes[0]
	ctx := context.Background()
	src, err := transport.OpenSource(ctx, "oci:"+debImage+":bookworm", transport.SourceOptions{})
	if err != nil {
		b.Fatal(err)
	}
	res, err := image.Push(ctx, holder, src, image.PushOptions{})
	src.Close()
	if err != nil {
		b.Fatal(err)
	}
	roots := []cid.Cid{res.Root}
	for _, s := range res.Image.Blobs {
		c, err := cid.Decode(s)
		if err != nil {
			b.Fatal(err)
		}
		roots = append(roots, c)
	}
	var every []cid.Cid
	for _, r := range roots {
		every = append(every, r)
		sh, err := blob.ShapeOf(ctx, holder.DAG(), r)
		if err != nil {
			b.Fatal(err)
		}
		every = append(every, sh.Inner...)
		for _, l := range sh.Leaves {
			every = append(every, l.CID)
		}
	}
	// Let the routing tables fill before measuring.
	deadline := time.Now().Add(30 * time.Second)
	for holder.DHTStat().Peers < members/2 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	b.Logf("routing table of the holder: %d peers", holder.DHTStat().Peers)
	for _, set := range []struct {
		name string
		cids []cid.Cid
	}{{"image-and-blob-roots", roots}, {"every-block", every}} {
		b.Run(set.name, func(b *testing.B) {
			for b.Loop() {
				for _, c := range set.cids {
					if err := holder.DHT().IpfsDHT.Provide(ctx, c, true); err != nil {
						b.Fatalf("provide %s: %v", c, err)
					}
				}
			}
			b.ReportMetric(float64(len(set.cids)), "CIDs")
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N)/float64(len(set.cids)), "ms/CID")
		})
	}
	b.Run("find-from-the-last-daemon", func(b *testing.B) {
		far := nodes[members-1]
		for b.Loop() {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			found := false
			for range far.DHT().FindProviders(ctx, res.Root, 1) {
				found = true
			}
			cancel()
			if !found {
				b.Fatal(fmt.Errorf("no provider of %s found", res.Root))
			}
		}
	})
}
