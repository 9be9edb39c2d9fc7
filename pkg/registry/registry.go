// Package registry serves a node's images over the OCI distribution API,
// so that containerd, CRI, skopeo and every other OCI client pull from and
// push to IPFS without knowing it.
//
// Two kinds of repository live side by side. ipfs/CID is read-only and
// holds the image whose root is CID, fetched from peers as blocks arrive
// (nerdctl's convention: 127.0.0.1:5050/ipfs/CID is an image reference).
// Every other name is an ordinary repository: what clients push there is
// stored in IPFS, the bytes as pushed are served back unchanged, and each
// manifest is also converted to shoal's format, whose root CID the
// responses carry in the Shoal-Root-CID header and `shoal images` lists.
package registry

import (
	"context"
	"crypto/rand"
	_ "crypto/sha512" // digests may use sha512
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/mirror"
	"github.com/shoal-ipfs/shoal/pkg/store"
)

// Store is what the registry needs of a store: images converted and
// pinned, and uploads held until a manifest names them.
type Store interface {
	image.Store
	store.Catalog
	store.Holder
}

// RootHeader carries the root CID of the image a manifest was converted to.
const RootHeader = "Shoal-Root-CID"

// Registry is an http.Handler for /v2/.
type Registry struct {
	store   Store
	meta    ds.Batching
	log     *slog.Logger
	timeout time.Duration
	maxDoc  int64
	uploads *uploads

	// uploadLimits are the options' bounds, defaults not yet applied.
	uploadLimits UploadLimits
	// clientTimeout cuts off a client that stops sending or reading.
	clientTimeout time.Duration

	trees   *treeCache
	metrics *metrics
	auth    *auth // nil: no credentials needed
	mirror  *mirror.Mirror
	// verified remembers blobs whose CID and digest are known to match.
	verified *lru.Cache[string, struct{}]
}

// Option changes a registry.
type Option func(*Registry)

// WithLogger logs requests that fail inside the registry.
func WithLogger(l *slog.Logger) Option { return func(r *Registry) { r.log = l } }

// WithFetchTimeout bounds how long content that is not stored here may take
// to arrive from peers: a request waits at most this long for its first
// byte, and a download stops when no byte has come for this long.
func WithFetchTimeout(d time.Duration) Option { return func(r *Registry) { r.timeout = d } }

// WithMaxManifestSize refuses larger manifests with 413.
func WithMaxManifestSize(n int64) Option { return func(r *Registry) { r.maxDoc = n } }

// WithMetrics registers the registry's metrics with reg.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(r *Registry) { r.metrics = newMetrics(reg) }
}

// DefaultFetchTimeout is the fetch timeout unless WithFetchTimeout says otherwise.
const DefaultFetchTimeout = 30 * time.Second

// New returns a registry over store that keeps its records in meta and its
// unfinished uploads under uploadDir (emptied now: uploads do not survive
// a restart).
func New(store Store, meta ds.Batching, uploadDir string, opts ...Option) (*Registry, error) {
	rg := &Registry{
		store:   store,
		meta:    meta,
		log:     slog.New(slog.DiscardHandler),
		timeout: DefaultFetchTimeout,
		maxDoc:  4 << 20,

		clientTimeout: DefaultClientTimeout,
	}
	for _, o := range opts {
		o(rg)
	}
	if rg.metrics == nil {
		rg.metrics = newMetrics(nil)
	}
	if err := os.RemoveAll(uploadDir); err != nil {
		return nil, fmt.Errorf("registry: clear uploads: %w", err)
	}
	if err := os.MkdirAll(uploadDir, 0o700); err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	rg.uploads = newUploads(uploadDir, rg.uploadLimits.withDefaults())
	rg.verified, _ = lru.New[string, struct{}](1 << 16)
	rg.trees = newTreeCache(rg)
	return rg, nil
}

// Run expires idle uploads until ctx ends, then drops the rest. It runs
// beside whatever serves the registry. An idle upload goes within a
// tenth of the idle bound past it.
func (rg *Registry) Run(ctx context.Context) {
	idle := rg.uploads.limits.Idle
	janitor := time.NewTicker(min(max(idle/10, time.Second), time.Minute))
	defer janitor.Stop()
	for {
		select {
		case <-janitor.C:
			rg.uploads.expire(time.Now().Add(-idle))
		case <-ctx.Done():
			rg.uploads.expire(time.Now().Add(time.Hour))
			return
		}
	}
}

// ServeHTTP routes a request of the distribution API.
func (rg *Registry) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	rt, err := parseRoute(r.URL.Path)
	dl := rg.withDeadlines(rw, r)
	defer dl.done()
	w := rg.metrics.track(dl, r, rt, err)
	defer w.done()
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if ns := r.URL.Query().Get("ns"); err == nil && ns != "" && (rt.kind == kindManifest || rt.kind == kindBlob) {
		if err := rg.serveMirror(w, r, rt, ns); err != nil {
			writeError(w, r, err)
		}
		return
	}
	if err == nil && rg.auth != nil {
		if err = rg.auth.check(r); err != nil {
			w.Header().Set("WWW-Authenticate", challenge)
		}
	}
	if err != nil {
		writeError(w, r, err)
		return
	}
	if err := rg.serve(w, r, rt); err != nil {
		var ae *apiError
		if !errors.As(err, &ae) && r.Context().Err() == nil {
			rg.log.Warn("registry request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		}
		writeError(w, r, err)
	}
}

func (rg *Registry) serve(w http.ResponseWriter, r *http.Request, rt route) error {
	m := r.Method
	if m == http.MethodHead {
		m = http.MethodGet
	}
	if strings.HasPrefix(rt.name, ipfsPrefix) {
		if _, ok := IPFSRoot(rt.name); !ok {
			return errNameUnknown.with("%s: want ipfs/CID, the CID of an image", rt.name)
		}
		if m != http.MethodGet {
			return errDenied.with("%s is read-only: its content is the image with that CID", rt.name)
		}
	}
	switch rt.kind {
	case kindBase:
		if m == http.MethodGet {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte("{}\n"))
			return nil
		}
	case kindCatalog:
		if m == http.MethodGet {
			return rg.getCatalog(w, r)
		}
	case kindManifest:
		switch m {
		case http.MethodGet:
			return rg.getManifest(w, r, rt)
		case http.MethodPut:
			return rg.putManifest(w, r, rt)
		case http.MethodDelete:
			return rg.deleteManifest(w, r, rt)
		}
	case kindBlob:
		switch m {
		case http.MethodGet:
			return rg.getBlob(w, r, rt)
		case http.MethodDelete:
			return rg.deleteBlob(w, r, rt)
		}
	case kindUploads:
		if m == http.MethodPost {
			return rg.startUpload(w, r, rt)
		}
	case kindUpload:
		switch m {
		case http.MethodGet:
			return rg.uploadStatus(w, r, rt)
		case http.MethodPatch:
			return rg.patchUpload(w, r, rt)
		case http.MethodPut:
			return rg.finishUpload(w, r, rt)
		case http.MethodDelete:
			return rg.cancelUpload(w, r, rt)
		}
	case kindTags:
		if m == http.MethodGet {
			return rg.getTags(w, r, rt)
		}
	case kindReferrers:
		if m == http.MethodGet {
			return rg.getReferrers(w, r, rt)
		}
	}
	return errUnsupported.with("%s %s", r.Method, r.URL.Path)
}

// page applies the n and last query parameters of tag and catalog
// listings, and sets the Link header to the next page.
func page(w http.ResponseWriter, r *http.Request, all []string) ([]string, error) {
	q := r.URL.Query()
	if last := q.Get("last"); last != "" {
		i := 0
		for i < len(all) && all[i] <= last {
			i++
		}
		all = all[i:]
	}
	if s := q.Get("n"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return nil, &apiError{Code: "PAGINATION_NUMBER_INVALID", Message: "invalid number of results requested", status: http.StatusBadRequest}
		}
		if n < len(all) {
			all = all[:n]
			if n > 0 {
				next := *r.URL
				nq := next.Query()
				nq.Set("last", all[n-1])
				next.RawQuery = nq.Encode()
				w.Header().Set("Link", fmt.Sprintf("<%s>; rel=\"next\"", next.RequestURI()))
			}
		}
	}
	if all == nil {
		all = []string{}
	}
	return all, nil
}

func (rg *Registry) getCatalog(w http.ResponseWriter, r *http.Request) error {
	enc, err := rg.keys(r.Context(), nameKeyPrefix)
	if err != nil {
		return err
	}
	names := make([]string, len(enc))
	for i, e := range enc {
		names[i] = decName(e)
	}
	names, err = page(w, r, names)
	if err != nil {
		return err
	}
	return writeJSON(w, r, "application/json", map[string][]string{"repositories": names})
}

func (rg *Registry) getTags(w http.ResponseWriter, r *http.Request, rt route) error {
	var tags []string
	if root, ok := IPFSRoot(rt.name); ok {
		if _, err := rg.trees.get(r.Context(), root); err != nil {
			return err
		}
		tags = []string{"latest"}
	} else {
		var err error
		if tags, err = rg.keys(r.Context(), repoKey(rt.name).ChildString("tag")); err != nil {
			return err
		}
		if len(tags) == 0 {
			if known, err := rg.meta.Has(r.Context(), nameKey(rt.name)); err != nil {
				return err
			} else if !known {
				return errNameUnknown.with("%s", rt.name)
			}
		}
	}
	tags, err := page(w, r, tags)
	if err != nil {
		return err
	}
	return writeJSON(w, r, "application/json", map[string]any{"name": rt.name, "tags": tags})
}

var nameKeyPrefix = ds.NewKey("/name")

func writeJSON(w http.ResponseWriter, r *http.Request, contentType string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	if r.Method != http.MethodHead {
		_, _ = w.Write(data)
	}
	return nil
}

// addHeld adds r to the store and holds it under hold, under a lease so
// that a collection between the two does not take what was added.
func (rg *Registry) addHeld(ctx context.Context, hold string, r io.Reader) (cid.Cid, error) {
	var c cid.Cid
	err := image.WithLease(ctx, rg.store, func(image.Lease) error {
		var err error
		if c, err = rg.store.Add(ctx, r); err != nil {
			return fmt.Errorf("add: %w", err)
		}
		return rg.store.Hold(ctx, hold, c)
	})
	return c, err
}

// newID names an upload: 32 hex digits.
func newID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return fmt.Sprintf("%x", b)
}
