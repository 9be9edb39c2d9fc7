package mirror

import (
	"fmt"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
)

// Readers that start together spread over the holders of a blob, each
// asking all of them in an order of its own, and only holders.
func TestReadersSpreadOverHolders(t *testing.T) {
	d := digest.FromString("layer")
	answers := []answer{
		{Peer: "holder-a", State: stateStored},
		{Peer: "fetcher", State: stateFetching},
		{Peer: "holder-b", State: stateStored},
		{Peer: "empty", Mirrors: true},
		{Peer: "holder-c", State: stateStored},
	}
	first := map[peer.ID]int{}
	const readers = 30
	for i := range readers {
		order := holders(peer.ID(fmt.Sprintf("reader-%d", i)), d, answers)
		if len(order) != 3 {
			t.Fatalf("reader %d asks %v, want the three holders", i, order)
		}
		first[order[0]]++
	}
	for _, h := range []peer.ID{"holder-a", "holder-b", "holder-c"} {
		if first[h] < readers/6 {
			t.Fatalf("of %d readers, so many start at each holder: %v", readers, first)
		}
	}
	// One reader asks in the same order every time.
	if a, b := holders("reader-0", d, answers), holders("reader-0", d, answers); fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("%v, then %v", a, b)
	}
}
