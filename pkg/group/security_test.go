package group

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/shoal-ipfs/shoal/internal/testimage"
	"github.com/shoal-ipfs/shoal/internal/testnode"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/node"
)

// recordOf is what g knows of root.
func recordOf(g *Group, root cid.Cid) (Shard, bool) {
	for _, s := range g.Shards() {
		if s.Root == root {
			return s, true
		}
	}
	return Shard{}, false
}

// twoMembers starts two members that reach an origin holding an image
// (of seed), and waits until each counts the other.
func twoMembers(ctx context.Context, t *testing.T, seed int64) (root cid.Cid, a, b *member) {
	t.Helper()
	origin := testnode.Online(t, "/tcp/")
	root = testimage.Push(ctx, t, origin, testimage.IndexLayout(t, seed, 1<<20), image.PushOptions{}).Root
	na := testnode.Online(t, "/tcp/", origin)
	nb := testnode.Online(t, "/tcp/", origin, na)
	a, b = startMember(t, na, time.Minute), startMember(t, nb, time.Minute)
	waitFor(t, "two members", func() bool { return len(a.g.Members()) == 2 && len(b.g.Members()) == 2 })
	return root, a, b
}

// TestAnOutsiderCannotJoinOrForgeRecords is the attack as reproduced: a
// peer that serves the group's protocol and sends one message with
// Replicas 0 and a date far in the future, plus a record of unrelated
// content. The members neither count it nor adopt its records.
func TestAnOutsiderCannotJoinOrForgeRecords(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root, a, b := twoMembers(ctx, t, 3)
	na, nb := a.n, b.n
	if _, err := a.g.Shard(ctx, root, 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b to learn the record", func() bool { _, ok := recordOf(b.g, root); return ok })

	unrelated := chunkCIDs(1)[0]
	forged := []Record{
		{Root: root.String(), Replicas: 0, Updated: time.Now().AddDate(50, 0, 0)},
		{Root: unrelated.String(), Replicas: 3, Updated: time.Now().AddDate(50, 0, 0)},
	}
	outsider := testnode.Online(t, "/tcp/", na, nb)
	// It answers whoever asks with the forged records...
	outsider.Host().SetStreamHandler(Protocol("test"), func(s network.Stream) {
		defer s.Close()
		_ = s.SetDeadline(time.Now().Add(5 * time.Second))
		var req request
		_ = decodeMessage(s, &req)
		_ = encodeMessage(s, response{Shards: forged})
	})
	// ...and tells every member itself.
	for _, m := range []*node.Node{na, nb} {
		s, err := outsider.Host().NewStream(ctx, m.Host().ID(), Protocol("test"))
		if err != nil {
			t.Fatal(err)
		}
		_ = s.SetDeadline(time.Now().Add(5 * time.Second))
		_ = encodeMessage(s, request{Op: "sync", Shards: forged})
		_ = s.CloseWrite()
		_, _ = io.Copy(io.Discard, s)
		s.Close()
	}
	time.Sleep(3 * time.Second) // several rounds of the members' observe loop

	for _, m := range []*member{a, b} {
		if got := m.g.Members(); len(got) != 2 {
			t.Errorf("member %s counts %d members %v, want the two holding the key", m.n.Host().ID(), len(got), got)
		}
		if rec, _ := recordOf(m.g, root); rec.Replicas != 1 {
			t.Errorf("member %s: record %+v, want the operator's (1 replica)", m.n.Host().ID(), rec)
		}
		if rec, ok := recordOf(m.g, unrelated); ok {
			t.Errorf("member %s adopted the outsider's record %+v", m.n.Host().ID(), rec)
		}
	}
}

// TestRecordsFromTheFutureAreRefused: a record dated more than the allowed
// skew ahead of this member's clock is refused; one within it is taken.
func TestRecordsFromTheFutureAreRefused(t *testing.T) {
	ctx := context.Background()
	n := testnode.Online(t, "/tcp/")
	g := newTestGroup(t, n, "future")
	roots := chunkCIDs(2)
	now := time.Now().UTC()
	recs := []Shard{
		{Root: roots[0], Replicas: 2, Updated: now.Add(time.Hour)},
		{Root: roots[1], Replicas: 2, Updated: now.Add(20 * time.Second)},
	}
	if err := g.learn(ctx, peer.ID("member-x"), toWire(recs), nil); err != nil {
		t.Fatal(err)
	}
	if rec, ok := recordOf(g, roots[0]); ok {
		t.Errorf("took a record dated an hour ahead: %+v", rec)
	}
	if _, ok := recordOf(g, roots[1]); !ok {
		t.Error("refused a record 20 s ahead, within the skew")
	}
}

// TestOperatorShardFixesANewerRecord: a member holds a record dated ahead
// of the operator's member's clock (a member whose clock runs fast set
// it); `shoal shard` on another member still replaces it, everywhere.
func TestOperatorShardFixesANewerRecord(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root, a, b := twoMembers(ctx, t, 5)
	ahead := Shard{Root: root, Replicas: 0, Updated: time.Now().UTC().Add(40 * time.Second)}
	if _, _, err := b.g.merge(ctx, []Shard{ahead}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.g.Shard(ctx, root, 2); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*member{a, b} {
		waitFor(t, "the operator's record everywhere", func() bool {
			rec, _ := recordOf(m.g, root)
			return rec.Replicas == 2
		})
	}
}

// TestRecordsAreBounded: a member keeps at most a bounded number of
// records, however many others send.
func TestRecordsAreBounded(t *testing.T) {
	ctx := context.Background()
	n := testnode.Online(t, "/tcp/")
	g := newTestGroup(t, n, "bounded")
	now := time.Now().UTC()
	roots := chunkCIDs(5000)
	for i := 0; i < len(roots); i += 1000 {
		var recs []Shard
		for _, r := range roots[i : i+1000] {
			recs = append(recs, Shard{Root: r, Replicas: 1, Updated: now})
		}
		_ = g.learn(ctx, peer.ID("member-x"), toWire(recs), nil)
	}
	if got := len(g.Shards()); got > maxRecords {
		t.Errorf("a member keeps %d records", got)
	}
}

func newTestGroup(t *testing.T, n *node.Node, name string) *Group {
	t.Helper()
	g, err := New(n, name, n.Metadata("group/"+name), Options{Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	return g
}
