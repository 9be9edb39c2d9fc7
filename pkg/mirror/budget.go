package mirror

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/opencontainers/go-digest"
)

// The cache budget: mirrored content beyond Options.CacheSize is dropped,
// least recently served first, down to nine tenths of the budget. A
// dropped blob loses its record and its hold, a mirrored image that names
// it is unpinned, and Options.Collect (the node's GC) frees the blocks
// that nothing else keeps. What a user pinned stays whatever the budget.

// budgetEvery is how often the budget is checked.
const budgetEvery = 30 * time.Second

// touchEvery bounds how often serving a blob rewrites its record.
const touchEvery = time.Minute

// touch notes that d was served now.
func (m *Mirror) touch(ctx context.Context, d digest.Digest, rec record) {
	if time.Since(rec.Used) < touchEvery {
		return
	}
	rec.Used = time.Now().UTC()
	if data, err := json.Marshal(rec); err == nil {
		_ = m.meta.Put(ctx, blobKey(d), data)
	}
}

type recorded struct {
	digest digest.Digest
	record
}

// EnforceBudget drops the least recently served content until what the
// mirror keeps fits in its budget.
func (m *Mirror) EnforceBudget(ctx context.Context) error {
	budget := m.opts.CacheSize
	if budget <= 0 {
		return nil
	}
	var all []recorded
	var total int64
	err := m.each(ctx, "/blob", func(key string, value []byte) {
		var rec record
		d, err := digest.Parse(ds.RawKey(key).BaseNamespace())
		if err == nil && json.Unmarshal(value, &rec) == nil {
			all = append(all, recorded{d, rec})
			total += rec.Size
		}
	})
	if err != nil {
		return err
	}
	m.metrics.cached.Set(float64(total))
	if total <= budget {
		return nil
	}
	slices.SortFunc(all, func(a, b recorded) int { return a.Used.Compare(b.Used) })
	dropped := map[string]bool{}
	for _, r := range all {
		if total <= budget/10*9 {
			break
		}
		if err := m.store.Release(ctx, holdName(r.digest)); err != nil {
			return err
		}
		if err := m.meta.Delete(ctx, blobKey(r.digest)); err != nil {
			return err
		}
		dropped[r.CID] = true
		total -= r.Size
	}
	m.metrics.cached.Set(float64(total))
	m.log.Info("mirror: dropped content beyond the cache budget", "blobs", len(dropped), "kept", total, "budget", budget)
	if err := m.unpinDropped(ctx, dropped); err != nil {
		return err
	}
	if m.opts.Collect != nil {
		return m.opts.Collect(ctx)
	}
	return nil
}

// unpinDropped unpins the mirrored images that name a dropped blob.
func (m *Mirror) unpinDropped(ctx context.Context, dropped map[string]bool) error {
	imgs, err := m.Images(ctx)
	if err != nil {
		return err
	}
	for _, im := range imgs {
		root, err := cid.Decode(im.Root)
		if err != nil {
			continue
		}
		img, err := m.store.Image(ctx, root)
		if err != nil {
			continue
		}
		if slices.ContainsFunc(img.Blobs, func(c string) bool { return dropped[c] }) {
			if err := m.store.RemoveImage(ctx, root); err != nil {
				return err
			}
			r, tag, err := ParseTagged(im.Name)
			if err == nil {
				_ = m.meta.Delete(ctx, imageKey(r, tag))
			}
		}
	}
	return nil
}
