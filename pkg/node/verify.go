package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/shoal-ipfs/shoal/pkg/packs"
	"github.com/shoal-ipfs/shoal/pkg/store"
)

// repairRounds bounds how many times a repair fetches what is missing: a
// fetched inner node may reveal further missing blocks below it.
const repairRounds = 8

// Verify reads every stored block and checks it against its CID, then
// walks every pinned blob for blocks it lacks. With repair, corrupt
// blocks are dropped and what pinned blobs lack is fetched from peers
// (online only; offline, a later read fetches it).
func (n *Node) Verify(ctx context.Context, repair bool) (store.VerifyResult, error) {
	var res store.VerifyResult
	keys, err := n.bstore.AllKeysChan(ctx)
	if err != nil {
		return res, err
	}
	seen := map[string]bool{} // a block both packed and loose is listed twice
	for k := range keys {
		if seen[string(k.Hash())] {
			continue
		}
		seen[string(k.Hash())] = true
		size, err := n.bstore.GetSize(ctx, k)
		if err != nil {
			continue // gone since listed
		}
		res.Blocks++
		res.Bytes += int64(size)
		switch err := n.packs.Check(ctx, k); {
		case errors.Is(err, packs.ErrCorrupt):
			res.Corrupt = append(res.Corrupt, k.String())
			if repair {
				if err := n.bstore.DeleteBlock(ctx, k); err != nil {
					return res, fmt.Errorf("verify: drop %s: %w", k, err)
				}
			}
		case ipld.IsNotFound(err):
			// Gone since listed: a collection, or a repair of its
			// blob, took it between the two reads.
			res.Blocks--
			res.Bytes -= int64(size)
		case err != nil:
			return res, fmt.Errorf("verify: read %s: %w", k, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	for round := 0; ; round++ {
		res.Missing, err = n.missingFromPins(ctx)
		if err != nil || len(res.Missing) == 0 || !repair || n.host == nil || round == repairRounds {
			return res, err
		}
		want := make([]cid.Cid, 0, len(res.Missing))
		for _, d := range res.Missing {
			if c, err := cid.Decode(d.Block); err == nil {
				want = append(want, c)
			}
		}
		if err := n.Fetch(ctx, want); err != nil {
			n.log.Warn("verify: fetching missing blocks", "blocks", len(want), "err", err)
		}
		fetched := 0
		for _, c := range want {
			has, err := n.bstore.Has(ctx, c)
			if err != nil {
				return res, err
			}
			if has {
				fetched++
			}
		}
		res.Fetched += fetched
		if fetched == 0 {
			res.Missing, err = n.missingFromPins(ctx)
			return res, err
		}
	}
}

// missingFromPins lists the blocks pinned blobs reach and the store lacks.
func (n *Node) missingFromPins(ctx context.Context) ([]store.Damage, error) {
	n.pinMu.Lock()
	defer n.pinMu.Unlock()
	var all []store.Damage
	live := map[string]struct{}{}
	for sp := range n.pins.RecursiveKeys(ctx, false) {
		if sp.Err != nil {
			return nil, sp.Err
		}
		damage, err := n.mark(ctx, sp.Pin.Key, live)
		if err != nil {
			return nil, err
		}
		all = append(all, damage...)
	}
	return all, nil
}
