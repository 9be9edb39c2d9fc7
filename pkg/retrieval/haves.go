package retrieval

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/shoal-ipfs/shoal/pkg/blob"
)

// HavesProtocol tells which leaves of a blob a peer holds, so that a node
// fetching from the swarm asks for each leaf a peer that has it instead of
// finding out one refusal at a time. Request: a CID (uvarint length, then
// its bytes). Response: the number of leaves of the blob in file order
// (uvarint), then a bitmap of those the peer stores (bit i of byte i/8);
// 0 leaves when the peer does not know the blob's shape.
const HavesProtocol = protocol.ID("/shoal/haves/1.0.0")

const (
	// maxHavesLeaves bounds a bitmap: a 256 GiB blob of 256 KiB leaves.
	maxHavesLeaves = 1 << 20
	// havesInterval is how often a fetching node asks its peers again.
	havesInterval = 500 * time.Millisecond
	// havesFresh is how long a node answers from the bitmap it last
	// made for a blob: all its peers ask about the same one at once.
	havesFresh = 200 * time.Millisecond
)

// havesCache keeps, per blob, its leaves and the bitmap last made.
type havesCache struct {
	mu      sync.Mutex
	entries map[cid.Cid]*havesEntry
}

type havesEntry struct {
	leaves []cid.Cid
	bits   []byte
	made   time.Time
	// live counts the fetches of the blob running here: they mark each
	// leaf they store, so the bitmap needs no new look at the store.
	live int
}

// serveHaves answers one haves request from the local store only.
func (rt *Retriever) serveHaves(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	c, err := readCIDRequest(bufio.NewReader(s))
	if err != nil {
		s.Reset()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	count, bits := rt.localHaves(ctx, c)
	if err := writeHaves(s, count, bits); err != nil {
		s.Reset()
	}
}

// localHaves is the bitmap of c's leaves stored here; 0 leaves if the
// nodes above them are not all here.
func (rt *Retriever) localHaves(ctx context.Context, c cid.Cid) (int, []byte) {
	cache := &rt.haves
	cache.mu.Lock()
	e := cache.entries[c]
	if e != nil && (e.live > 0 || time.Since(e.made) < havesFresh) {
		defer cache.mu.Unlock()
		return len(e.leaves), slices.Clone(e.bits)
	}
	cache.mu.Unlock()
	var leaves []cid.Cid
	if e != nil {
		leaves = e.leaves
	} else {
		var err error
		if leaves, err = blob.Leaves(ctx, rt.offline, c); err != nil || len(leaves) > maxHavesLeaves {
			return 0, nil
		}
	}
	// A leaf found once stays (until GC, which drops the cache): only the
	// leaves not found yet are looked up again.
	bits := make([]byte, (len(leaves)+7)/8)
	if e != nil {
		copy(bits, e.bits)
	}
	for i, l := range leaves {
		if has(bits, i) {
			continue
		}
		if ok, err := rt.store.Has(ctx, l); err == nil && ok {
			bits[i/8] |= 1 << (i % 8)
		}
	}
	cache.mu.Lock()
	defer cache.mu.Unlock()
	if cache.entries == nil || len(cache.entries) > 64 {
		cache.entries = map[cid.Cid]*havesEntry{} // a few blobs are fetched at a time
	}
	if now := cache.entries[c]; now != nil && now.live > 0 {
		return len(now.leaves), slices.Clone(now.bits) // a fetch began meanwhile
	}
	cache.entries[c] = &havesEntry{leaves: leaves, bits: bits, made: time.Now()}
	return len(leaves), slices.Clone(bits)
}

// liveHaves keeps the bitmap of blob c (of leaves, index giving each
// leaf's positions) served to peers up to date while this node fetches
// it: mark records a leaf stored, end stops the updates. Peers ask every
// havesInterval while they fetch; without this each ask would look up
// every leaf not yet here in the store again.
func (rt *Retriever) liveHaves(ctx context.Context, c cid.Cid, index map[cid.Cid][]int) (mark func(leaf cid.Cid), end func()) {
	rt.localHaves(ctx, c) // the bitmap as the fetch begins
	cache := &rt.haves
	cache.mu.Lock()
	e := cache.entries[c]
	if e != nil {
		e.live++
	}
	cache.mu.Unlock()
	if e == nil {
		return func(cid.Cid) {}, func() {}
	}
	mark = func(leaf cid.Cid) {
		cache.mu.Lock()
		defer cache.mu.Unlock()
		for _, i := range index[leaf] {
			if i/8 < len(e.bits) {
				e.bits[i/8] |= 1 << (i % 8)
			}
		}
	}
	end = func() {
		cache.mu.Lock()
		defer cache.mu.Unlock()
		e.live--
		e.made = time.Now()
	}
	return mark, end
}

func readCIDRequest(r *bufio.Reader) (cid.Cid, error) {
	size, err := binary.ReadUvarint(r)
	if err != nil {
		return cid.Undef, err
	}
	if size == 0 || size > 128 {
		return cid.Undef, fmt.Errorf("haves request: CID of %d bytes", size)
	}
	buf := make([]byte, size)
	if _, err := io.ReadFull(r, buf); err != nil {
		return cid.Undef, err
	}
	return cid.Cast(buf)
}

func writeHaves(w io.Writer, count int, bits []byte) error {
	out := binary.AppendUvarint(nil, uint64(count))
	_, err := w.Write(append(out, bits...))
	return err
}

// readHaves reads a response for a blob of want leaves: the bitmap, or
// nil if the peer does not know the blob.
func readHaves(r *bufio.Reader, want int) ([]byte, error) {
	count, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err
	}
	if count == 0 {
		return nil, nil
	}
	if count != uint64(want) {
		return nil, fmt.Errorf("haves: %d leaves, want %d", count, want)
	}
	bits := make([]byte, (want+7)/8)
	if _, err := io.ReadFull(r, bits); err != nil {
		return nil, err
	}
	return bits, nil
}

// askHaves asks p which leaves of c (a blob of want leaves) it holds.
func (rt *Retriever) askHaves(ctx context.Context, p peer.ID, c cid.Cid, want int) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := rt.host.NewStream(network.WithNoDial(ctx, "asking connected peers"), p, HavesProtocol)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(d)
	}
	req := binary.AppendUvarint(nil, uint64(len(c.Bytes())))
	if _, err := s.Write(append(req, c.Bytes()...)); err != nil {
		s.Reset()
		return nil, err
	}
	_ = s.CloseWrite()
	bits, err := readHaves(bufio.NewReader(s), want)
	if err != nil {
		s.Reset()
	}
	return bits, err
}

// haves is what a node fetching one blob knows of its peers' leaves,
// asked again every havesInterval while the fetch runs.
type haves struct {
	index map[cid.Cid][]int // leaf → its positions in the blob
	mu    sync.Mutex
	bits  map[peer.ID][]byte
}

// has reports whether bits has position i set.
func has(bits []byte, i int) bool { return i/8 < len(bits) && bits[i/8]&(1<<(i%8)) != 0 }

// watchHaves keeps asking peers which of the blob's leaves they hold,
// until ctx ends; the caller waits on the returned function.
func (rt *Retriever) watchHaves(ctx context.Context, c cid.Cid, leaves []cid.Cid, peers []peer.ID) (*haves, func()) {
	h := &haves{index: map[cid.Cid][]int{}, bits: map[peer.ID][]byte{}}
	for i, l := range leaves {
		h.index[l] = append(h.index[l], i)
	}
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Go(func() {
			t := time.NewTicker(havesInterval)
			defer t.Stop()
			for {
				bits, err := rt.askHaves(ctx, p, c, len(leaves))
				if err != nil && !errors.Is(err, context.Canceled) {
					rt.log.Debug("asking a peer which leaves it has failed", "peer", p, "err", err)
				}
				h.mu.Lock()
				h.bits[p] = bits
				h.mu.Unlock()
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		})
	}
	return h, wg.Wait
}

// snapshot is, under one lock, each of peers' bitmaps, in their order.
func (h *haves) snapshot(peers []peer.ID) [][]byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	bits := make([][]byte, len(peers))
	for q, p := range peers {
		bits[q] = h.bits[p]
	}
	return bits
}

// holdsAt reports whether bits has any of a leaf's positions.
func holdsAt(bits []byte, positions []int) bool {
	for _, i := range positions {
		if has(bits, i) {
			return true
		}
	}
	return false
}

// forget drops every bitmap: after GC, leaves found before may be gone.
func (c *havesCache) forget() {
	c.mu.Lock()
	c.entries = nil
	c.mu.Unlock()
}
