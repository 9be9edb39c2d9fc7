// Package group shards images across the members of a group of shoal
// daemons, so that no member needs a whole image and a pull can draw on
// all of them.
//
// Members find each other among their connected peers: a member serves the
// group's libp2p protocol, and identify tells every peer so. A peer that
// serves it is only a candidate: it is a member once it proves, on a
// stream, that it holds the group key (auth.go). Members tell
// each other which images are sharded and with how many replicas, and each
// works out the same assignment with no coordinator: every chunk of an
// image goes to the R members ranked highest for it by rendezvous hashing
// over member IDs. When a member joins or leaves, only the chunks whose top
// R change move. A member keeps the image's small blocks whole (root,
// indexes, manifests, configs, the nodes above chunks), so every member can
// walk the image, and a pull from the members alone finds every chunk.
package group

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/multiformats/go-multihash"
	"github.com/shoal-ipfs/shoal/internal/errkind"
	"github.com/shoal-ipfs/shoal/pkg/blob"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/routing"
)

// Node is what a group member needs of its IPFS node.
type Node interface {
	image.Store
	Host() host.Host
	DAG() ipld.DAGService
	Blockstore() blockstore.Blockstore
	// Fetch makes blocks local, from peers.
	Fetch(ctx context.Context, blocks []cid.Cid) error
	// HoldBlocks keeps exactly blocks under name until replaced or
	// released.
	HoldBlocks(ctx context.Context, name string, blocks ...cid.Cid) error
	Release(ctx context.Context, name string) error
}

// Options configure a member.
type Options struct {
	// Grace is how long a member that went away still counts as one, so
	// that a restart or a short partition moves no chunks.
	Grace time.Duration
	// FetchTimeout bounds how long reading an image's structure waits for
	// peers.
	FetchTimeout time.Duration
	// Key is the group key (KeySize bytes, see LoadKey), the same on
	// every member.
	Key []byte
	Log *slog.Logger
}

// DefaultGrace is the grace of a member that went away.
const DefaultGrace = time.Minute

var validName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// CheckName refuses a group name that cannot be part of a protocol ID.
func CheckName(name string) error {
	if !validName.MatchString(name) {
		return fmt.Errorf("group name %q: want 1 to 63 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit", name)
	}
	return nil
}

// Protocol is the libp2p protocol the members of group name serve. 2.0.0
// starts every stream with the handshake; members of 1.0.0, which proved
// nothing, are not candidates.
func Protocol(name string) protocol.ID { return protocol.ID("/shoal/group/" + name + "/2.0.0") }

// finder is a node on a DHT, through which members that share no
// connected peer meet: each announces the group's rendezvous CID and looks
// up who else does.
type finder interface {
	Router() routing.Router
}

// Rendezvous is the CID that members of group name announce on the DHT.
func Rendezvous(name string) cid.Cid {
	c, _ := cid.V1Builder{Codec: cid.Raw, MhType: multihash.SHA2_256}.Sum([]byte(Protocol(name)))
	return c
}

// meetInterval is how often a member looks for others on the DHT; it
// announces itself every meetAnnounceEvery of those.
const (
	meetInterval      = 30 * time.Second
	meetAnnounceEvery = 10
)

// Group is this node's membership of one group.
type Group struct {
	name   string
	proto  protocol.ID
	keys   keyring
	n      Node
	self   peer.ID
	meta   ds.Batching
	opts   Options
	log    *slog.Logger
	limits imageLimits

	mu         sync.Mutex
	shards     map[cid.Cid]Shard
	lastSeen   map[peer.ID]time.Time  // other members (proven), when last connected
	peers      map[peer.ID]*peerState // connected peers that speak the protocol
	plans      map[cid.Cid]*plan
	kept       map[cid.Cid]map[cid.Cid]bool // chunks held, by image
	tooLarge   map[cid.Cid]Shard            // records whose image is beyond the limits
	forgotten  []cid.Cid                    // records dropped for room, their holds yet to release
	dirty      bool                         // records changed since the last reconcile
	busyWarned time.Time                    // when refusing streams for the bound was last logged

	serving  chan struct{} // streams being served
	planning chan struct{} // images' structures being read
	wake     chan struct{}
	bg       sync.WaitGroup

	// beforeSpread, set by tests, runs between writing an operator's
	// record and telling the members.
	beforeSpread func()
}

// Shard is the policy of one image in the group: how many members keep
// each of its chunks. Records change by last writer wins; Replicas 0
// means the image left the group's care.
type Shard struct {
	Root     cid.Cid
	Replicas int
	Updated  time.Time
}

// New makes n a member of group name; meta keeps its shard records. The
// member serves the group once Run starts.
func New(n Node, name string, meta ds.Batching, opts Options) (*Group, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	if len(opts.Key) != KeySize {
		return nil, fmt.Errorf("group %s: %w: every member needs the same group key of %d bytes", name, ErrNoKey, KeySize)
	}
	if n.Host() == nil {
		return nil, errkind.New("group: node is offline", errdefs.ErrUnavailable)
	}
	if opts.Grace <= 0 {
		opts.Grace = DefaultGrace
	}
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = 30 * time.Second
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Group{
		name: name, proto: Protocol(name), n: n, self: n.Host().ID(), meta: meta, opts: opts,
		keys:     keyring{key: slices.Clone(opts.Key), proto: Protocol(name)},
		log:      log.With("group", name),
		limits:   defaultImageLimits,
		shards:   map[cid.Cid]Shard{},
		lastSeen: map[peer.ID]time.Time{},
		peers:    map[peer.ID]*peerState{},
		plans:    map[cid.Cid]*plan{},
		kept:     map[cid.Cid]map[cid.Cid]bool{},
		tooLarge: map[cid.Cid]Shard{},
		serving:  make(chan struct{}, maxServing),
		planning: make(chan struct{}, maxPlanning),
		wake:     make(chan struct{}, 1),
	}
	if err := g.load(context.Background()); err != nil {
		return nil, err
	}
	return g, nil
}

// Name is the group's name.
func (g *Group) Name() string { return g.name }

// Run serves the group protocol and keeps this member's share of every
// sharded image until ctx ends.
func (g *Group) Run(ctx context.Context) error {
	g.n.Host().SetStreamHandler(g.proto, func(s network.Stream) { g.serve(ctx, s) })
	defer g.n.Host().RemoveStreamHandler(g.proto)
	defer g.bg.Wait()
	if f, ok := g.n.(finder); ok && f.Router() != nil {
		g.bg.Go(func() { g.meet(ctx, f.Router()) })
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var (
		applied string // the view the last successful reconcile applied
		retry   time.Time
	)
	for {
		view := g.observe(ctx)
		g.mu.Lock()
		dirty := g.dirty
		g.dirty = false
		g.mu.Unlock()
		if dirty || view != applied || (!retry.IsZero() && time.Now().After(retry)) {
			if err := g.reconcile(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				g.log.Warn("keeping this member's share failed; trying again soon", "err", err)
				retry = time.Now().Add(10 * time.Second)
				applied = ""
			} else {
				retry, applied = time.Time{}, view
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-g.wake:
		}
	}
}

// meet announces this member on the DHT and connects to the others it
// finds there, until ctx ends.
func (g *Group) meet(ctx context.Context, r routing.Router) {
	rv := Rendezvous(g.name)
	t := time.NewTimer(0)
	defer t.Stop()
	for round := 0; ; round++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if round%meetAnnounceEvery == 0 {
			r.Provide(rv)
		}
		if found := routing.Connect(ctx, g.n.Host(), r, rv, 20, askTimeout); len(found) > 0 {
			g.log.Debug("members found on the DHT", "peers", len(found))
		}
		// Soon at first, while the DHT fills, then at the interval.
		t.Reset(min(meetInterval, time.Duration(round+1)*2*time.Second))
	}
}

func (g *Group) poke() {
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// observe notes which members are connected, tells new candidates our
// records (which proves, or disproves, that they are members), and returns
// the membership as a string that changes when it does.
func (g *Group) observe(ctx context.Context) string {
	h := g.n.Host()
	now := time.Now()
	var fresh []peer.ID
	connected := map[peer.ID]bool{}
	for _, p := range h.Network().Peers() {
		connected[p] = true
		candidate := false
		if ok, err := h.Peerstore().SupportsProtocols(p, g.proto); err == nil && len(ok) > 0 {
			candidate = true
		}
		g.mu.Lock()
		st := g.peers[p]
		if st == nil && candidate {
			st = g.peerOf(p)
		}
		if st != nil && st.verified {
			g.lastSeen[p] = now
		}
		if candidate && !st.synced && now.After(st.retry) {
			st.synced = true
			fresh = append(fresh, p)
		}
		g.mu.Unlock()
	}
	g.mu.Lock()
	for p := range g.peers {
		if !connected[p] {
			delete(g.peers, p)
		}
	}
	g.mu.Unlock()
	for _, p := range fresh {
		g.bg.Go(func() {
			if err := g.sync(ctx, p); err != nil {
				g.log.Debug("exchanging records with a candidate failed", "peer", p, "err", err)
			}
		})
	}
	return fmt.Sprint(g.Members())
}

// Members are the group's members as this one sees them, itself included:
// those connected that proved the group key, and those gone for less than
// the grace. Sorted.
func (g *Group) Members() []peer.ID {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := []peer.ID{g.self}
	for p, seen := range g.lastSeen {
		if time.Since(seen) < g.opts.Grace {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// ShardResult is what became of the record Shard wrote.
type ShardResult struct {
	// Record is the record written.
	Record Record `json:"Record"`
	// Replaced is the record it replaced, when that one was dated ahead of
	// this member's clock (by a member whose clock runs fast, most
	// likely): Record is dated just after it, so that it wins.
	Replaced *Record `json:"Replaced,omitempty"`
	// Newer is a record a member answered with, newer than Record, which
	// the group keeps instead (another operator's, most likely).
	Newer *Record `json:"Newer,omitempty"`
}

// Shard puts the image at root under the group's care with replicas
// copies of each chunk (0 takes it out), and tells the connected members.
// The record is the group's latest: it learns first what the connected
// members hold, and is dated after it, whatever their clocks say.
func (g *Group) Shard(ctx context.Context, root cid.Cid, replicas int) (ShardResult, error) {
	if replicas < 0 || replicas > maxReplicas {
		return ShardResult{}, fmt.Errorf("shard %s: replicas %d: want 0 to %d", root, replicas, maxReplicas)
	}
	if replicas > 0 {
		if _, err := g.plan(ctx, root); err != nil {
			return ShardResult{}, fmt.Errorf("shard %s: %w", root, err)
		}
	}
	g.syncMembers(ctx)
	now := time.Now().UTC()
	g.mu.Lock()
	old, had := g.shards[root]
	g.mu.Unlock()
	rec := Shard{Root: root, Replicas: replicas, Updated: now}
	if had && !now.After(old.Updated) {
		rec.Updated = old.Updated.Add(time.Millisecond)
	}
	if _, refused, err := g.merge(ctx, []Shard{rec}); err != nil {
		return ShardResult{}, fmt.Errorf("shard %s: %w", root, err)
	} else if len(refused) > 0 {
		return ShardResult{}, fmt.Errorf("shard %s: the group keeps at most %d records and none of them is of an image out of its care; take images out first (`shoal shard CID --remove`)", root, maxRecords)
	}
	if g.beforeSpread != nil {
		g.beforeSpread()
	}
	g.syncMembers(ctx)
	g.poke()
	res := ShardResult{Record: toRecord(rec)}
	if had && old.Updated.After(now) {
		r := toRecord(old)
		res.Replaced = &r
	}
	g.mu.Lock()
	cur := g.shards[root]
	g.mu.Unlock()
	if newer(cur, rec) {
		r := toRecord(cur)
		res.Newer = &r
		g.log.Warn("a member holds a newer record of the image just sharded, which overrides it", "image", root, "replicas", cur.Replicas, "dated", cur.Updated)
	}
	return res, nil
}

// syncMembers exchanges records with every connected member; those that
// fail are tried again at the next observe.
func (g *Group) syncMembers(ctx context.Context) {
	var wg sync.WaitGroup
	for _, p := range g.Members() {
		if p != g.self && g.n.Host().Network().Connectedness(p) == network.Connected {
			wg.Go(func() {
				if err := g.sync(ctx, p); err != nil {
					g.log.Warn("exchanging records with a member failed; trying again soon", "peer", p, "err", err)
				}
			})
		}
	}
	wg.Wait()
}

// Shards lists the records this member knows, images out of care included.
func (g *Group) Shards() []Shard {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Shard, 0, len(g.shards))
	for _, s := range g.shards {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Root.String() < out[j].Root.String() })
	return out
}

// newer reports whether record a replaces b: later wins, and between
// records of the same instant the one with more replicas, so every member
// settles on the same one.
func newer(a, b Shard) bool {
	if !a.Updated.Equal(b.Updated) {
		return a.Updated.After(b.Updated)
	}
	return a.Replicas > b.Replicas
}

// same reports whether a and b are the same record.
func same(a, b Shard) bool {
	return a.Root == b.Root && a.Replicas == b.Replicas && a.Updated.Equal(b.Updated)
}

// holdName is the node hold under which this member keeps its share.
func (g *Group) holdName(root cid.Cid) string { return "group/" + g.name + "/" + root.String() }

// plan is how an image divides among members: its small blocks, which
// every member keeps, and its chunks, which are shared out.
type plan struct {
	whole  []cid.Cid
	chunks []blob.Leaf // each chunk once, in image order
	size   uint64      // of the chunks
}

// plan reads the structure of the image at root (fetching its documents
// and the nodes above its chunks, never the chunks) and divides it. It
// refuses an image beyond g.limits as soon as it sees it is.
func (g *Group) plan(ctx context.Context, root cid.Cid) (*plan, error) {
	cached := func() *plan {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.plans[root]
	}
	if p := cached(); p != nil {
		return p, nil
	}
	select {
	case g.planning <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-g.planning }()
	if p := cached(); p != nil {
		return p, nil // read by another meanwhile
	}
	tree, err := image.ReadTree(ctx, g.n, root, g.opts.FetchTimeout)
	if err != nil {
		return nil, err
	}
	if err := g.limits.checkTree(tree); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, g.opts.FetchTimeout)
	defer cancel()
	session := merkledag.NewSession(ctx, g.n.DAG())
	p := &plan{}
	seen := map[cid.Cid]bool{}
	for _, c := range tree.CIDs {
		if c.Prefix().Codec == cid.Raw {
			p.whole = append(p.whole, c) // a blob of one block
			continue
		}
		sh, err := blob.ShapeOf(ctx, session, c)
		if err != nil {
			return nil, fmt.Errorf("blob %s: %w", c, err)
		}
		p.whole = append(p.whole, sh.Inner...)
		for _, l := range sh.Leaves {
			if !seen[l.CID] {
				seen[l.CID] = true
				p.chunks = append(p.chunks, l)
				p.size += l.Size
			}
		}
		if err := g.limits.checkPlan(p); err != nil {
			return nil, err
		}
	}
	g.mu.Lock()
	g.plans[root] = p
	g.mu.Unlock()
	return p, nil
}

// owners are the replicas members that keep chunk c: those ranked highest
// for it by rendezvous hashing.
func owners(members []peer.ID, c cid.Cid, replicas int) []peer.ID {
	ranked := slices.Clone(members)
	score := func(p peer.ID) uint64 {
		h := sha256.New()
		h.Write([]byte(p))
		h.Write(c.Hash())
		return binary.BigEndian.Uint64(h.Sum(nil))
	}
	scores := make(map[peer.ID]uint64, len(ranked))
	for _, p := range ranked {
		scores[p] = score(p)
	}
	slices.SortFunc(ranked, func(a, b peer.ID) int {
		switch {
		case scores[a] > scores[b]:
			return -1
		case scores[a] < scores[b]:
			return 1
		}
		return 0
	})
	return ranked[:min(replicas, len(ranked))]
}

// share is the part of p's chunks that self keeps when members divide them.
func share(p *plan, members []peer.ID, self peer.ID, replicas int) []blob.Leaf {
	var out []blob.Leaf
	for _, l := range p.chunks {
		if slices.Contains(owners(members, l.CID, replicas), self) {
			out = append(out, l)
		}
	}
	return out
}

// reconcile makes this member keep exactly its share of every sharded
// image, under the membership it sees now.
func (g *Group) reconcile(ctx context.Context) error {
	members := g.Members()
	var errs []error
	g.mu.Lock()
	forgotten := g.forgotten
	g.forgotten = nil
	g.mu.Unlock()
	for _, root := range forgotten {
		if err := g.n.Release(ctx, g.holdName(root)); err != nil {
			errs = append(errs, fmt.Errorf("image %s: %w", root, err))
			g.mu.Lock()
			g.forgotten = append(g.forgotten, root)
			g.mu.Unlock()
		}
	}
	for _, rec := range g.Shards() {
		if err := g.keep(ctx, rec, members); err != nil {
			errs = append(errs, fmt.Errorf("image %s: %w", rec.Root, err))
		}
	}
	return errors.Join(errs...)
}

func (g *Group) keep(ctx context.Context, rec Shard, members []peer.ID) error {
	name := g.holdName(rec.Root)
	if rec.Replicas == 0 {
		g.mu.Lock()
		delete(g.kept, rec.Root)
		g.mu.Unlock()
		return g.n.Release(ctx, name)
	}
	g.mu.Lock()
	refused := same(g.tooLarge[rec.Root], rec)
	g.mu.Unlock()
	if refused {
		return nil
	}
	p, err := g.plan(ctx, rec.Root)
	if errors.Is(err, errTooLarge) {
		// Not tried again until the record changes: the image does not.
		g.mu.Lock()
		g.tooLarge[rec.Root] = rec
		g.mu.Unlock()
		g.log.Warn("keeping no share of an image beyond the group's limits", "image", rec.Root, "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	mine := share(p, members, g.self, rec.Replicas)
	keep := slices.Clone(p.whole)
	kept := make(map[cid.Cid]bool, len(mine))
	for _, l := range mine {
		keep = append(keep, l.CID)
		kept[l.CID] = true
	}
	start := time.Now()
	// The share is fetched and held under a lease, so that a collection in
	// between takes neither what was fetched nor what was already here.
	err = image.WithLease(ctx, g.n, func(l image.Lease) error {
		if err := l.Keep(ctx, keep...); err != nil {
			return err
		}
		if err := g.n.Fetch(ctx, keep); err != nil {
			return err
		}
		return g.n.HoldBlocks(ctx, name, keep...)
	})
	if err != nil {
		return err
	}
	g.mu.Lock()
	moved := 0
	for c := range kept {
		if !g.kept[rec.Root][c] {
			moved++
		}
	}
	g.kept[rec.Root] = kept
	g.mu.Unlock()
	if moved > 0 {
		g.log.Info("keeping share", "image", rec.Root, "members", len(members), "replicas", rec.Replicas,
			"chunks", len(mine), "of", len(p.chunks), "new", moved, "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}
