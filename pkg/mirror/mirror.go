// Package mirror makes a node a pull-through mirror of other registries:
// containerd asks the node's registry for docker.io/library/debian:12 (a
// mirror request, /v2/library/debian/manifests/12?ns=docker.io) and the
// mirror answers with the upstream's bytes, found in this order:
//
//  1. the local store, where every mirrored manifest and blob is kept as a
//     UnixFS file (kubo's CIDs) under a record of its digest;
//  2. peers: one that holds the blob whole serves it by CID, from every
//     peer that has it at once; one that is fetching it right now streams
//     the bytes it has and those still to come;
//  3. the upstream, once per swarm: of the peers that mirror the registry
//     and lack the blob, the one ranked first for the digest fetches it
//     and the others read from it (or from one another, in a chain) as the
//     bytes arrive.
//
// A digest learned from a peer is never trusted: every response is checked
// against the digest before it completes, and nothing is recorded before
// that check. Tags are resolved at the upstream and cached for a while;
// through an outage the last digest known here or to a peer is served.
// A repository that the upstream does not serve anonymously is served only
// to clients whose credentials the upstream accepts for it.
package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	ds "github.com/ipfs/go-datastore"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/store"
	"github.com/shoal-ipfs/shoal/pkg/upstream"
)

// Store is what the mirror keeps content in: blobs held by digest, and
// images pinned.
type Store interface {
	image.Store
	store.Catalog
	store.Holder
}

// Upstream is a registry the mirror pulls through (upstream.Client).
type Upstream interface {
	Resolve(ctx context.Context, repo, ref, auth string) (ocispec.Descriptor, error)
	Manifest(ctx context.Context, repo, ref, auth string) ([]byte, ocispec.Descriptor, error)
	Blob(ctx context.Context, repo string, d digest.Digest, offset int64, auth string) (io.ReadCloser, int64, error)
	Check(ctx context.Context, repo, ref, auth string) (ocispec.Descriptor, error)
}

// Options configure a mirror.
type Options struct {
	// Endpoints are the mirrored registries; Registry "*" mirrors any.
	Endpoints []upstream.Endpoint
	// TagTTL is how long a tag resolved at the upstream is served without
	// asking again (DefaultTagTTL if zero).
	TagTTL time.Duration
	// StallTimeout is how long a source may send nothing before the
	// next one takes over (DefaultStallTimeout if zero).
	StallTimeout time.Duration
	// Spool is a directory for blobs on their way in.
	Spool string
	// Peers finds and asks other nodes; nil mirrors alone.
	Peers *Peers
	// CacheSize bounds the bytes of mirrored content kept; 0 keeps all.
	CacheSize int64
	// Collect frees what the mirror dropped (the node's GC); nil leaves
	// that to the next `shoal gc`.
	Collect func(context.Context) error
	// Metrics registers the mirror's metrics.
	Metrics prometheus.Registerer
	Log     *slog.Logger
	// NewUpstream makes the client of an endpoint (tests); default
	// upstream.New.
	NewUpstream func(upstream.Endpoint) Upstream
}

// DefaultTagTTL is how long a tag is served as last resolved.
const DefaultTagTTL = time.Minute

// Mirror answers mirror requests. It is safe for concurrent use.
type Mirror struct {
	store   Store
	meta    ds.Batching
	opts    Options
	log     *slog.Logger
	metrics *metrics
	access  *access

	// ctx ends the downloads at Close; wg waits for them.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	upstreams map[string]Upstream
	downloads map[digest.Digest]*download
	pending   map[string]*pendingImage
	// down remembers upstreams that failed to answer, so that misses are
	// answered at once rather than after another connect timeout.
	down map[string]time.Time
}

// New returns a mirror over store that keeps its records in meta.
func New(store Store, meta ds.Batching, opts Options) (*Mirror, error) {
	if opts.TagTTL <= 0 {
		opts.TagTTL = DefaultTagTTL
	}
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = DefaultStallTimeout
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.NewUpstream == nil {
		opts.NewUpstream = func(ep upstream.Endpoint) Upstream { return upstream.New(ep) }
	}
	if opts.Spool == "" {
		return nil, errors.New("mirror: no spool directory")
	}
	// What was on its way in when the node stopped is fetched again.
	if err := os.RemoveAll(opts.Spool); err != nil {
		return nil, fmt.Errorf("mirror: clear spool: %w", err)
	}
	if err := os.MkdirAll(opts.Spool, 0o700); err != nil {
		return nil, fmt.Errorf("mirror: %w", err)
	}
	m := &Mirror{
		store: store, meta: meta, opts: opts, log: opts.Log,
		metrics:   newMetrics(opts.Metrics),
		upstreams: map[string]Upstream{},
		downloads: map[digest.Digest]*download{},
		pending:   map[string]*pendingImage{},
		down:      map[string]time.Time{},
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.access = newAccess(m)
	m.wg.Go(func() { every(m.ctx, convertEvery, m.convertPending) })
	if opts.CacheSize > 0 {
		m.wg.Go(func() {
			every(m.ctx, budgetEvery, func(ctx context.Context) {
				if err := m.EnforceBudget(ctx); err != nil && ctx.Err() == nil {
					m.log.Warn("mirror: keeping to the cache budget", "err", err)
				}
			})
		})
	}
	if opts.Peers != nil {
		opts.Peers.serve(m)
	}
	return m, nil
}

// Close stops the downloads and waits for them to end.
func (m *Mirror) Close() error {
	if m.opts.Peers != nil {
		m.opts.Peers.close()
	}
	m.cancel()
	m.wg.Wait()
	return nil
}

// Mirrors tells whether requests for registry ns are answered here.
func (m *Mirror) Mirrors(ns string) bool {
	_, ok := m.endpoint(ns)
	return ok
}

func (m *Mirror) endpoint(ns string) (upstream.Endpoint, bool) {
	if ParseNamespace(ns) != nil {
		return upstream.Endpoint{}, false
	}
	var any *upstream.Endpoint
	for i, ep := range m.opts.Endpoints {
		if ep.Registry == ns {
			return ep, true
		}
		if ep.Registry == "*" {
			any = &m.opts.Endpoints[i]
		}
	}
	if any != nil {
		return any.ForRegistry(ns), true
	}
	return upstream.Endpoint{}, false
}

// upstream is the client of registry ns.
func (m *Mirror) upstream(ns string) (Upstream, error) {
	ep, ok := m.endpoint(ns)
	if !ok {
		return nil, fmt.Errorf("registry %q is not mirrored here: %w", ns, errdefs.ErrNotFound)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.upstreams[ns]
	if !ok {
		u = m.opts.NewUpstream(ep)
		m.upstreams[ns] = u
	}
	return u, nil
}

// upstreamDownFor is how long an upstream that did not answer is taken
// for down: misses meanwhile cost nothing.
const upstreamDownFor = 5 * time.Second

// noteUpstream records whether ns's upstream answered.
func (m *Mirror) noteUpstream(ns string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil && errdefs.IsUnavailable(err) {
		m.down[ns] = time.Now()
	} else if err == nil {
		delete(m.down, ns)
	}
}

func (m *Mirror) upstreamDown(ns string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.down[ns]
	return ok && time.Since(t) < upstreamDownFor
}

// errUpstreamDown is what a request gets while its upstream is taken for down.
func errUpstreamDown(ns string) error {
	return fmt.Errorf("upstream %s did not answer a moment ago: %w", ns, errdefs.ErrUnavailable)
}

// Ref names what a mirror request asks for.
type Ref struct {
	// Registry is the request's ns: the registry the client meant.
	Registry string
	// Repo is the repository within it (library/debian for docker.io).
	Repo string
	// Auth is the client's Authorization header, forwarded upstream to
	// check its access to a private repository.
	Auth string
}

func (r Ref) String() string { return r.Registry + "/" + r.Repo }

// Manifest returns the manifest or index ref (a tag or a digest) names,
// its bytes as the upstream has them.
func (m *Mirror) Manifest(ctx context.Context, r Ref, ref string) ([]byte, ocispec.Descriptor, error) {
	checked, err := m.access.check(ctx, r, ref)
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	d, err := digest.Parse(ref)
	if err == nil {
		return m.manifestByDigest(ctx, r, d)
	}
	desc, err := m.resolveTag(ctx, r, ref, checked)
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	data, desc, err := m.manifestByDigest(ctx, r, desc.Digest)
	if err == nil {
		m.notePending(r, ref, desc)
	}
	return data, desc, err
}

// Blob is a blob the mirror serves.
type Blob struct {
	// Descriptor has the blob's digest and size; its urls name its CID
	// when the blob is read from the store (or from peers by CID), and
	// Open is nil then.
	Descriptor ocispec.Descriptor
	// Open reads the blob from offset as it arrives. The reader checks
	// the digest itself: it returns its last bytes and io.EOF only once
	// the whole blob has matched.
	Open func(ctx context.Context, offset int64) (io.ReadCloser, error)
	// Served, when set, is told that a response sent the whole blob and
	// it matched the digest: the mirror then records what it learnt.
	Served func()
	// Mismatch, when set, is told that a read under the descriptor's CID
	// did not match the digest: the peer that named the CID lied.
	Mismatch func()
}

// Blob finds blob d of r.
func (m *Mirror) Blob(ctx context.Context, r Ref, d digest.Digest) (Blob, error) {
	if _, err := m.access.check(ctx, r, ""); err != nil {
		return Blob{}, err
	}
	return m.blob(ctx, r, d, "")
}

// keyFor is where the mirror records what it knows of a digest.
func blobKey(d digest.Digest) ds.Key { return ds.NewKey("/blob").ChildString(d.String()) }

// holdName keeps a mirrored blob out of garbage collection.
func holdName(d digest.Digest) string {
	return "mirror/" + strings.ReplaceAll(d.String(), ":", "-")
}
