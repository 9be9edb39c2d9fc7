package node

import (
	"bytes"
	"context"
	"math/rand"
	"testing"
	"time"

	"github.com/shoal-ipfs/shoal/pkg/catalog"
	"github.com/shoal-ipfs/shoal/pkg/routing"
)

// TestDHTFindsTheHolderBeyondConnectedPeers: four daemons on the LAN DHT
// in a chain, each connected only to the one before. The first pins an
// image; the last, which is not connected to it, finds it through the DHT
// and reads the image's blob from it.
func TestDHTFindsTheHolderBeyondConnectedPeers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	daemon := Options{Announce: true}
	holder := openOnline(t, daemon, nil)
	b := openOnline(t, daemon, nil, holder)
	c := openOnline(t, daemon, nil, b)
	far := openOnline(t, daemon, nil, c)

	data := make([]byte, 3<<20)
	rand.New(rand.NewSource(5)).Read(data)
	blob, err := holder.Add(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	img := catalog.Image{CID: blob.String(), Created: time.Now(), Blobs: []string{blob.String()}}
	if err := holder.PinImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for holder.DHTStat().Provided == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the holder never announced its image: %+v", holder.DHTStat())
		}
		time.Sleep(100 * time.Millisecond)
	}
	st := holder.DHTStat()
	t.Logf("announced %d CIDs in %s, %d peers in the routing table", st.Provided, st.ProvideTime, st.Peers)
	// A DHT this small soon connects everyone; the far node drops its
	// connection to the holder, so only the DHT can lead it back.
	if err := far.host.Network().ClosePeer(holder.host.ID()); err != nil {
		t.Fatal(err)
	}

	mustCat(ctx, t, far, blob, data)
	found := routing.Connect(ctx, far.host, far.Router(), blob, 4, 10*time.Second)
	if len(found) == 0 || found[0] != holder.host.ID() {
		t.Errorf("providers of the blob: %v; want the holder", found)
	}
}
