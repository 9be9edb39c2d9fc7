package group

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
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
	res, err := a.g.Shard(ctx, root, 2)
	if err != nil {
		t.Fatal(err)
	}
	if res.Replaced == nil || res.Replaced.Replicas != 0 || !res.Record.Updated.After(ahead.Updated) || res.Newer != nil {
		t.Errorf("shard result %+v: want it to say it replaced the record dated ahead", res)
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

// TestAMemberWithAnotherKeyIsNoMember: three members by name, one with
// another key. The two with the same key count each other only, and the
// third's records reach neither of them, nor theirs it.
func TestAMemberWithAnotherKeyIsNoMember(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root, a, b := twoMembers(ctx, t, 7)
	nc := testnode.Online(t, "/tcp/", a.n, b.n)
	c := startMemberWithKey(t, nc, time.Minute, bytes.Repeat([]byte{7}, KeySize))
	if _, err := a.g.Shard(ctx, root, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := c.g.Shard(ctx, root, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b to learn a's record", func() bool { _, ok := recordOf(b.g, root); return ok })
	time.Sleep(3 * time.Second) // several rounds of everyone's observe loop
	for _, m := range []*member{a, b} {
		if got := m.g.Members(); len(got) != 2 || slices.Contains(got, nc.Host().ID()) {
			t.Errorf("member %s counts %v", m.n.Host().ID(), got)
		}
		if rec, _ := recordOf(m.g, root); rec.Replicas != 1 {
			t.Errorf("member %s: record %+v, want a's", m.n.Host().ID(), rec)
		}
	}
	if got := c.g.Members(); len(got) != 1 {
		t.Errorf("the member with another key counts %v", got)
	}
	if rec, _ := recordOf(c.g, root); rec.Replicas != 0 {
		t.Errorf("the member with another key learnt %+v", rec)
	}
}

// TestShardSaysWhenANewerRecordOverridesIt: when a member answers the
// operator's record with a newer one (another operator's, written
// meanwhile), Shard says so, and the group keeps the newer.
func TestShardSaysWhenANewerRecordOverridesIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root, a, b := twoMembers(ctx, t, 9)
	theirs := Shard{Root: root, Replicas: 3, Updated: time.Now().UTC().Add(30 * time.Second)}
	a.g.beforeSpread = func() {
		if _, _, err := b.g.merge(ctx, []Shard{theirs}); err != nil {
			t.Error(err)
		}
	}
	res, err := a.g.Shard(ctx, root, 1)
	if err != nil {
		t.Fatal(err)
	}
	if res.Newer == nil || res.Newer.Replicas != 3 || !res.Newer.Updated.Equal(theirs.Updated) {
		t.Fatalf("shard result %+v: want it to name the newer record", res)
	}
	if rec, _ := recordOf(a.g, root); !same(rec, theirs) {
		t.Errorf("a keeps %+v, want the newer record", rec)
	}
}

// TestAnImageBeyondTheLimitsIsNotFetched: a member whose limits the image
// exceeds refuses to shard it, and keeps no share of it when another
// member's record names it: it fetches none of its chunks, and says why.
func TestAnImageBeyondTheLimitsIsNotFetched(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	origin := testnode.Online(t, "/tcp/")
	root := testimage.Push(ctx, t, origin, testimage.IndexLayout(t, 11, 1<<20), image.PushOptions{}).Root
	na := testnode.Online(t, "/tcp/", origin)
	nb := testnode.Online(t, "/tcp/", origin, na)
	a := startMember(t, na, time.Minute)
	b := startMemberWith(t, nb, time.Minute, testKey, func(g *Group) { g.limits.chunks = 2 })
	waitFor(t, "two members", func() bool { return len(a.g.Members()) == 2 && len(b.g.Members()) == 2 })
	if _, err := b.g.Shard(ctx, root, 1); !errors.Is(err, errTooLarge) {
		t.Errorf("shard of an image of 4 chunks with a limit of 2: %v", err)
	}
	if _, err := a.g.Shard(ctx, root, 2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b to refuse the image", func() bool {
		b.g.mu.Lock()
		defer b.g.mu.Unlock()
		_, ok := b.g.tooLarge[root]
		return ok
	})
	if _, err := b.g.Status(ctx, root); err == nil || !strings.Contains(err.Error(), "limits") {
		t.Errorf("status on the member that refused the image: %v", err)
	}
	a.g.mu.Lock()
	chunks := a.g.plans[root].chunks
	a.g.mu.Unlock()
	for _, l := range chunks {
		if has, err := nb.Blockstore().Has(ctx, l.CID); err != nil || has {
			t.Errorf("the member that refused the image has its chunk %s (%v)", l.CID, err)
		}
	}
	if n, _ := b.g.Kept(); n != 0 {
		t.Errorf("the member that refused the image keeps %d chunks", n)
	}
}

// TestAtTheBoundRecordsOutOfCareMakeRoom: with maxRecords records, a new
// image takes the place of the oldest one out of care (its hold is
// released); with none out of care left, new records are refused, and
// Shard says why.
func TestAtTheBoundRecordsOutOfCareMakeRoom(t *testing.T) {
	ctx := context.Background()
	n := testnode.Online(t, "/tcp/")
	g := newTestGroup(t, n, "room")
	roots := chunkCIDs(maxRecords + 3)
	t0 := time.Now().UTC().Add(-time.Hour)
	var recs []Shard
	for i, r := range roots[:maxRecords] {
		recs = append(recs, Shard{Root: r, Replicas: 1, Updated: t0.Add(time.Duration(i) * time.Second)})
	}
	recs[5].Replicas = 0 // the one out of care
	if _, refused, err := g.merge(ctx, recs); err != nil || len(refused) != 0 {
		t.Fatalf("filling to the bound: %v, refused %d", err, len(refused))
	}
	if _, refused, err := g.merge(ctx, []Shard{{Root: roots[maxRecords], Replicas: 1, Updated: t0}}); err != nil || len(refused) != 0 {
		t.Fatalf("a new image with one out of care: %v, refused %v", err, refused)
	}
	if _, ok := recordOf(g, roots[5]); ok {
		t.Error("the record out of care is still kept")
	}
	if !slices.Contains(g.forgotten, roots[5]) {
		t.Error("the hold of the record forgotten is not to be released")
	}
	if _, refused, _ := g.merge(ctx, []Shard{{Root: roots[maxRecords+1], Replicas: 1, Updated: t0}}); len(refused) != 1 {
		t.Errorf("a new image with none out of care: refused %v", refused)
	}
	if len(g.Shards()) != maxRecords {
		t.Errorf("%d records kept", len(g.Shards()))
	}
	if _, err := g.Shard(ctx, roots[maxRecords+2], 0); err == nil || !strings.Contains(err.Error(), "--remove") {
		t.Errorf("shard past the bound: %v", err)
	}
	if _, err := g.Shard(ctx, roots[0], 0); err != nil {
		t.Errorf("taking a known image out of care at the bound: %v", err)
	}
}

// TestStreamsArePaced: a peer gets its burst, then is refused, without
// holding back another; past the bound on streams served at once, any
// peer is refused.
func TestStreamsArePaced(t *testing.T) {
	n := testnode.Online(t, "/tcp/")
	g := newTestGroup(t, n, "paced")
	refused := 0
	for range peerBurst + 20 {
		if done, ok := g.admit("greedy"); ok {
			done()
		} else {
			refused++
		}
	}
	if refused == 0 {
		t.Errorf("%d streams at once from one peer, none refused", peerBurst+20)
	}
	var dones []func()
	for i := range maxServing {
		done, ok := g.admit(peer.ID(fmt.Sprint("member-", i)))
		if !ok {
			t.Fatalf("stream %d of %d at once refused", i+1, maxServing)
		}
		dones = append(dones, done)
	}
	if _, ok := g.admit("one-more"); ok {
		t.Error("a stream past the bound served at once was admitted")
	}
	for _, done := range dones {
		done()
	}
	if done, ok := g.admit("one-more"); !ok {
		t.Error("a stream refused once the others ended")
	} else {
		done()
	}
}

// TestStoredRecordsFromTheFutureCountAsNow: a record stored before records
// were checked, dated far ahead, counts as dated now when the member
// starts, so that a later record replaces it.
func TestStoredRecordsFromTheFutureCountAsNow(t *testing.T) {
	ctx := context.Background()
	n := testnode.Online(t, "/tcp/")
	root := chunkCIDs(1)[0]
	data, err := json.Marshal(Record{Root: root.String(), Replicas: 0, Updated: time.Now().AddDate(50, 0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	meta := n.Metadata("group/stored")
	if err := meta.Put(ctx, ds.NewKey(root.String()), data); err != nil {
		t.Fatal(err)
	}
	g := newTestGroup(t, n, "stored")
	if rec, _ := recordOf(g, root); rec.Updated.After(time.Now().Add(maxSkew)) {
		t.Fatalf("the stored record still dated %s", rec.Updated)
	}
	later := Shard{Root: root, Replicas: 2, Updated: time.Now().UTC().Add(time.Second)}
	if _, _, err := g.merge(ctx, []Shard{later}); err != nil {
		t.Fatal(err)
	}
	if rec, _ := recordOf(g, root); !same(rec, later) {
		t.Errorf("record %+v, want the later one", rec)
	}
}
