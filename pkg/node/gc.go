package node

import (
	"context"
	"fmt"

	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// GCResult says what a garbage collection freed.
type GCResult struct {
	Blocks int   // blocks removed
	Bytes  int64 // their size
	Kept   int   // blocks still referenced by a pin
}

// GC removes every block that no pinned image reaches and no block hold
// names. Adds and fetches
// wait while it runs, so a block being written is never collected.
func (n *Node) GC(ctx context.Context) (GCResult, error) {
	n.pinMu.Lock()
	defer n.pinMu.Unlock()
	if err := n.dropOrphanPins(ctx); err != nil {
		return GCResult{}, err
	}
	lock := n.bstore.GCLock(ctx)
	defer lock.Unlock(ctx)
	if n.gw != nil {
		defer n.gw.haves.forget()
	}

	// The blockstore is keyed by multihash: the keys it lists carry the raw
	// codec whatever codec the pin's links use, so liveness is by multihash.
	live := map[string]struct{}{}
	visit := func(c cid.Cid) bool {
		k := string(c.Hash())
		if _, ok := live[k]; ok {
			return false
		}
		live[k] = struct{}{}
		return true
	}
	for sp := range n.pins.RecursiveKeys(ctx, false) {
		if sp.Err != nil {
			return GCResult{}, sp.Err
		}
		err := merkledag.Walk(ctx, merkledag.GetLinksWithDAG(n.offline), sp.Pin.Key, visit)
		if err != nil && !ipld.IsNotFound(err) {
			return GCResult{}, fmt.Errorf("gc: walk pin %s: %w", sp.Pin.Key, err)
		}
	}
	if err := n.heldBlocks(ctx, func(c cid.Cid) { visit(c) }); err != nil {
		return GCResult{}, err
	}
	keys, err := n.bstore.AllKeysChan(ctx)
	if err != nil {
		return GCResult{}, err
	}
	var res GCResult
	for k := range keys {
		if _, ok := live[string(k.Hash())]; ok {
			res.Kept++
			continue
		}
		size, err := n.bstore.GetSize(ctx, k)
		if err != nil {
			continue
		}
		if err := n.bstore.DeleteBlock(ctx, k); err != nil {
			return res, fmt.Errorf("gc: delete %s: %w", k, err)
		}
		res.Blocks++
		res.Bytes += int64(size)
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if err := n.packs.Sweep(ctx); err != nil {
		return res, fmt.Errorf("gc: packs: %w", err)
	}
	return res, nil
}

// dropOrphanPins unpins blobs that no image record or hold names, which a
// crash in RemoveImage or Release can leave behind.
func (n *Node) dropOrphanPins(ctx context.Context) error {
	named, err := n.namedBlobs(ctx)
	if err != nil {
		return err
	}
	var orphans []cid.Cid
	for sp := range n.pins.RecursiveKeys(ctx, false) {
		if sp.Err != nil {
			return sp.Err
		}
		if !named[sp.Pin.Key.String()] {
			orphans = append(orphans, sp.Pin.Key)
		}
	}
	for _, c := range orphans {
		if err := n.pins.Unpin(ctx, c, true); err != nil {
			return fmt.Errorf("gc: unpin orphan %s: %w", c, err)
		}
	}
	return n.pins.Flush(ctx)
}
