package registry

import (
	"context"
	"errors"
	"strings"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/ipfs/go-cid"
	"github.com/shoal-ipfs/shoal/pkg/catalog"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"golang.org/x/sync/singleflight"
)

// ipfsPrefix starts the read-only repositories named by an image's CID.
const ipfsPrefix = "ipfs/"

// IPFSRoot returns the CID of a repository named ipfs/CID, the name by
// which nerdctl and shoal's registry call an image on IPFS.
func IPFSRoot(name string) (cid.Cid, bool) {
	s, ok := strings.CutPrefix(name, ipfsPrefix)
	if !ok || strings.Contains(s, "/") {
		return cid.Undef, false
	}
	c, err := cid.Decode(s)
	if err != nil {
		return cid.Undef, false
	}
	return c, true
}

// treeCache keeps the trees of recently served ipfs/CID images: the
// documents are small and every blob request needs its descriptor.
type treeCache struct {
	rg     *Registry
	trees  *lru.Cache[cid.Cid, *image.Tree]
	flight singleflight.Group
}

func newTreeCache(rg *Registry) *treeCache {
	c, err := lru.New[cid.Cid, *image.Tree](256)
	if err != nil {
		panic(err) // only for a size below one
	}
	return &treeCache{rg: rg, trees: c}
}

// get reads the tree of root, from peers if need be, once however many
// requests ask at the same time.
func (tc *treeCache) get(ctx context.Context, root cid.Cid) (*image.Tree, error) {
	if t, ok := tc.trees.Get(root); ok {
		return t, nil
	}
	ch := tc.flight.DoChan(root.KeyString(), func() (any, error) {
		// Detached from the first caller, whose disconnect must not fail
		// the others; the fetch timeout still bounds it.
		t, err := image.ReadTree(context.WithoutCancel(ctx), tc.rg.store, root, tc.rg.timeout)
		if err != nil {
			return nil, err
		}
		tc.trees.Add(root, t)
		return t, nil
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			switch {
			case errors.Is(res.Err, image.ErrTimeout):
				return nil, errManifestUnknown.with("%v", res.Err)
			case errors.Is(res.Err, image.ErrNotImage), errors.Is(res.Err, catalog.ErrNotFound):
				return nil, errNameUnknown.with("%v", res.Err)
			}
			return nil, res.Err
		}
		return res.Val.(*image.Tree), nil
	}
}
