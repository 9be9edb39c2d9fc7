package group

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multihash"
	"github.com/shoal-ipfs/shoal/internal/testimage"
	"github.com/shoal-ipfs/shoal/internal/testnode"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/node"
	"github.com/shoal-ipfs/shoal/pkg/transport"
)

func chunkCIDs(n int) []cid.Cid {
	out := make([]cid.Cid, n)
	for i := range out {
		out[i], _ = cid.V1Builder{Codec: cid.Raw, MhType: multihash.SHA2_256}.Sum(fmt.Appendf(nil, "chunk %d", i))
	}
	return out
}

func peerIDs(n int) []peer.ID {
	out := make([]peer.ID, n)
	for i := range out {
		out[i] = peer.ID(fmt.Sprintf("member-%d", i))
	}
	return out
}

// TestRendezvousSpreadsEvenlyAndMovesOnlyTheAffectedShare: with N members
// and R replicas each member owns about R/N of the chunks; when one leaves
// or joins, only chunks whose owners include it change owners.
func TestRendezvousSpreadsEvenlyAndMovesOnlyTheAffectedShare(t *testing.T) {
	chunks := chunkCIDs(4000)
	members := peerIDs(5)
	const r = 2
	owned := map[peer.ID]int{}
	before := map[cid.Cid][]peer.ID{}
	for _, c := range chunks {
		os := owners(members, c, r)
		if len(os) != r {
			t.Fatalf("chunk has %d owners, want %d", len(os), r)
		}
		before[c] = os
		for _, p := range os {
			owned[p]++
		}
	}
	for _, p := range members {
		share := float64(owned[p]) / float64(len(chunks))
		if share < 0.35 || share > 0.45 {
			t.Errorf("member %s owns %.2f of the chunks, want about %.2f", p, share, float64(r)/5)
		}
	}
	gone := members[2]
	without := slices.Delete(slices.Clone(members), 2, 3)
	moved := 0
	for _, c := range chunks {
		after := owners(without, c, r)
		if !slices.Contains(before[c], gone) {
			if !sameSet(after, before[c]) {
				t.Fatalf("chunk %s changed owners though the member that left did not own it", c)
			}
			continue
		}
		moved++
	}
	if moved != owned[gone] {
		t.Errorf("%d chunks moved, want the %d the leaver owned", moved, owned[gone])
	}
	joined := append(slices.Clone(members), peer.ID("member-new"))
	for _, c := range chunks {
		after := owners(joined, c, r)
		if !slices.Contains(after, peer.ID("member-new")) && !sameSet(after, before[c]) {
			t.Fatalf("chunk %s changed owners though the newcomer does not own it", c)
		}
	}
	if got := owners(members[:1], chunks[0], 3); len(got) != 1 {
		t.Errorf("one member, three replicas: %d owners", len(got))
	}
}

func sameSet(a, b []peer.ID) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

type member struct {
	n    *node.Node
	g    *Group
	stop func()
}

func startMember(t *testing.T, n *node.Node, grace time.Duration) *member {
	t.Helper()
	return startMemberWithKey(t, n, grace, testKey)
}

// testKey is the group key of the members tests start.
var testKey = []byte("0123456789abcdef0123456789abcdef")

func startMemberWithKey(t *testing.T, n *node.Node, grace time.Duration, key []byte) *member {
	t.Helper()
	return startMemberWith(t, n, grace, key, nil)
}

// startMemberWith starts a member of group "test" with key, setup (if
// any) changing it before it runs.
func startMemberWith(t *testing.T, n *node.Node, grace time.Duration, key []byte, setup func(*Group)) *member {
	t.Helper()
	g, err := New(n, "test", n.Metadata("group/test"), Options{Grace: grace, FetchTimeout: 20 * time.Second, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(g)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := g.Run(ctx); err != nil {
			t.Errorf("group run: %v", err)
		}
	}()
	m := &member{n: n, g: g}
	m.stop = func() { cancel(); <-done }
	t.Cleanup(m.stop)
	return m
}

// waitStatus polls m's status of root until ok accepts it.
func waitStatus(t *testing.T, m *member, root cid.Cid, what string, ok func(Status) bool) Status {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var last Status
	var err error
	for time.Now().Before(deadline) {
		last, err = m.g.Status(context.Background(), root)
		if err == nil && ok(last) {
			return last
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("waiting for %s: last status %+v, %v", what, last, err)
	return last
}

func heldSet(st Status, p peer.ID) []bool {
	for _, m := range st.Members {
		if m.Peer == p.String() {
			out := make([]bool, st.Chunks)
			for i := range out {
				out[i] = m.Held[i/8]&(1<<(i%8)) != 0
			}
			return out
		}
	}
	return nil
}

// TestGroupShardsAnImageAndServesItWithoutTheOrigin: three members, one of
// them told to shard an image with one replica, each keep about a third of
// its chunks (a member that only heard of another from a third included);
// with the origin gone, a node that reaches only the members pulls the
// whole image, every digest verified. When a member leaves, the other two
// take over its share and only its share.
func TestGroupShardsAnImageAndServesItWithoutTheOrigin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	origin := testnode.Online(t, "/tcp/")
	res := testimage.Push(ctx, t, origin, testimage.IndexLayout(t, 11, 3<<20, 2<<20, 1<<20), image.PushOptions{})
	root := res.Root

	na := testnode.Online(t, "/tcp/", origin)
	nb := testnode.Online(t, "/tcp/", origin, na)
	nc := testnode.Online(t, "/tcp/", origin, nb) // meets a through b
	a, b, c := startMember(t, na, 2*time.Second), startMember(t, nb, 2*time.Second), startMember(t, nc, 2*time.Second)
	waitFor(t, "three members", func() bool { return len(a.g.Members()) == 3 && len(c.g.Members()) == 3 })

	if _, err := a.g.Shard(ctx, root, 1); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, c, root, "the image spread over three members", func(s Status) bool {
		return len(s.Members) == 3 && s.Covered == s.Chunks && s.Replicated == s.Chunks
	})
	t.Logf("%d chunks, %d bytes", st.Chunks, st.Size)
	for _, m := range st.Members {
		t.Logf("member %s keeps %.1f%%", m.Peer, 100*m.Share)
		// Evenness is checked over 4,000 chunks in
		// TestRendezvousSpreadsEvenlyAndMovesOnlyTheAffectedShare; over
		// these 41, of unequal sizes, on random peer IDs, a member's
		// share varies by some 8 points (a CI run saw one keep 0.58).
		// This bound is four deviations: a member that keeps nothing, or
		// everything, fails it.
		if m.Share < 0.05 || m.Share > 0.65 {
			t.Errorf("member %s keeps %.2f of the image, want about a third", m.Peer, m.Share)
		}
	}
	for _, m := range []*member{a, b, c} {
		if _, err := m.n.GC(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// The origin goes; a node reaching only the members pulls the image.
	origin.Close()
	puller := testnode.Online(t, "/tcp/", na, nb, nc)
	dir := t.TempDir()
	dst, err := transport.OpenDestination("oci:" + dir + ":pulled")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := image.Pull(ctx, puller, root, dst, image.PullOptions{Timeout: 30 * time.Second}); err != nil {
		t.Fatalf("pull from the members alone: %v", err)
	}
	testimage.Validate(t, dir)

	// c leaves: after the grace, a and b keep everything between them,
	// and what each kept before is still part of what it keeps.
	beforeA, beforeB := heldSet(st, na.Host().ID()), heldSet(st, nb.Host().ID())
	c.stop()
	nc.Close()
	st = waitStatus(t, a, root, "two members covering the image", func(s Status) bool {
		return len(s.Members) == 2 && s.Covered == s.Chunks
	})
	for who, before := range map[peer.ID][]bool{na.Host().ID(): beforeA, nb.Host().ID(): beforeB} {
		after := heldSet(st, who)
		for i := range before {
			if before[i] && !after[i] {
				t.Errorf("member %s dropped chunk %d though only the leaver's share should move", who, i)
			}
		}
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestShardRecordsLastWriterWins: a newer record replaces an older one,
// the same instant settles on more replicas, and records survive a
// restart.
func TestShardRecordsLastWriterWins(t *testing.T) {
	ctx := context.Background()
	n := testnode.Online(t, "/tcp/")
	g, err := New(n, "lww", n.Metadata("group/lww"), Options{Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	root := chunkCIDs(1)[0]
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, rec := range []Shard{
		{Root: root, Replicas: 2, Updated: t0.Add(time.Minute)},
		{Root: root, Replicas: 3, Updated: t0},                  // older: ignored
		{Root: root, Replicas: 1, Updated: t0.Add(time.Minute)}, // same instant, fewer: ignored
	} {
		if _, _, err := g.merge(ctx, []Shard{rec}); err != nil {
			t.Fatal(err)
		}
	}
	g2, err := New(n, "lww", n.Metadata("group/lww"), Options{Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	if got := g2.Shards(); len(got) != 1 || got[0].Replicas != 2 {
		t.Fatalf("records after restart: %+v", got)
	}
	if err := CheckName("Bad Name"); err == nil {
		t.Error("a group name with spaces was accepted")
	}
}

// TestMembersMeetThroughTheDHT: two members whose only connected peer is a
// daemon outside the group find each other through the DHT (with the DHT
// off they never meet).
func TestMembersMeetThroughTheDHT(t *testing.T) {
	daemon := node.Options{Announce: true}
	hub := testnode.OnlineWithOptions(t, daemon, nil, "/tcp/")
	na := testnode.OnlineWithOptions(t, daemon, nil, "/tcp/", hub)
	nb := testnode.OnlineWithOptions(t, daemon, nil, "/tcp/", hub)
	a, b := startMember(t, na, time.Minute), startMember(t, nb, time.Minute)
	waitFor(t, "the members to meet", func() bool { return len(a.g.Members()) == 2 && len(b.g.Members()) == 2 })
}
