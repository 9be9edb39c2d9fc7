package registry

import (
	"context"
	"errors"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/ipfs/go-cid"
	"github.com/shoal-ipfs/shoal/pkg/image"
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
//
// Requests that ask for the same tree at once share one fetch, which
// lasts as long as one of them still waits: when the last one's client
// goes away the fetch is cancelled, so that clients asking for images
// nobody has and leaving cannot pile up work that outlives them. Fetches
// of different trees at once are bounded too (maxFetches), since a
// client that waits keeps its fetch going until the fetch timeout.
type treeCache struct {
	rg    *Registry
	trees *lru.Cache[cid.Cid, *image.Tree]

	mu         sync.Mutex
	fetches    map[cid.Cid]*treeFetch // in flight, with requests waiting
	maxFetches int
}

// DefaultMaxTreeFetches bounds the trees of ipfs/CID images fetched at
// once; a request for another gets 429 TOOMANYREQUESTS.
const DefaultMaxTreeFetches = 64

// treeFetch is a fetch of one tree and the requests waiting for it.
type treeFetch struct {
	waiting int // guarded by treeCache.mu
	cancel  context.CancelFunc
	done    chan struct{}
	tree    *image.Tree // set before done is closed
	err     error
}

func newTreeCache(rg *Registry) *treeCache {
	c, err := lru.New[cid.Cid, *image.Tree](256)
	if err != nil {
		panic(err) // only for a size below one
	}
	return &treeCache{rg: rg, trees: c, fetches: map[cid.Cid]*treeFetch{}, maxFetches: DefaultMaxTreeFetches}
}

// get reads the tree of root, from peers if need be, once however many
// requests ask at the same time.
func (tc *treeCache) get(ctx context.Context, root cid.Cid) (*image.Tree, error) {
	if t, ok := tc.trees.Get(root); ok {
		return t, nil
	}
	f, err := tc.join(ctx, root)
	if err != nil {
		return nil, err
	}
	select {
	case <-ctx.Done():
		tc.leave(root, f)
		return nil, ctx.Err()
	case <-f.done:
		tc.leave(root, f)
	}
	if f.err != nil {
		switch {
		case errors.Is(f.err, image.ErrTimeout):
			return nil, errManifestUnknown.with("%v", f.err)
		case errors.Is(f.err, image.ErrNotImage), errors.Is(f.err, errdefs.ErrNotFound):
			return nil, errNameUnknown.with("%v", f.err)
		case errors.Is(f.err, image.ErrOverBounds):
			return nil, errManifestInvalid.with("%v", f.err)
		}
		return nil, f.err
	}
	return f.tree, nil
}

// join waits for the fetch of root in flight, or starts one. The fetch
// does not end with the request that started it, which may leave before
// the others; its own context ends when the last waiting request leaves,
// and the fetch timeout bounds it as ever.
func (tc *treeCache) join(ctx context.Context, root cid.Cid) (*treeFetch, error) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	f := tc.fetches[root]
	if f == nil {
		if len(tc.fetches) >= tc.maxFetches {
			return nil, errTooManyRequests.with("%d images are being fetched from peers, the most at once", len(tc.fetches))
		}
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &treeFetch{cancel: cancel, done: make(chan struct{})}
		tc.fetches[root] = f
		go tc.fetch(fctx, root, f)
	}
	f.waiting++
	return f, nil
}

// leave stops waiting for f, and cancels it if no request waits any more.
func (tc *treeCache) leave(root cid.Cid, f *treeFetch) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if f.waiting--; f.waiting == 0 {
		f.cancel()
		// A request that comes later starts a fetch of its own rather
		// than joining a cancelled one.
		if tc.fetches[root] == f {
			delete(tc.fetches, root)
		}
	}
}

func (tc *treeCache) fetch(ctx context.Context, root cid.Cid, f *treeFetch) {
	defer f.cancel()
	f.tree, f.err = image.ReadTree(ctx, tc.rg.store, root, tc.rg.timeout)
	if f.err == nil {
		tc.trees.Add(root, f.tree)
	}
	tc.mu.Lock()
	if tc.fetches[root] == f {
		delete(tc.fetches, root)
	}
	tc.mu.Unlock()
	close(f.done)
}
