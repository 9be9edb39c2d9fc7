package mirror

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	lru "github.com/hashicorp/golang-lru/v2"
	ds "github.com/ipfs/go-datastore"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The access model: a repository the upstream serves anonymously is
// public, and anyone who reaches the mirror gets its content. Any other
// repository is private: a client gets its content only with credentials
// (its Authorization header, as containerd sends it to the mirror) that
// the upstream accepts for that repository, asked of the upstream and
// remembered for grantTTL. Content that the mirror or a peer already holds
// is no exception: the check is of the client, not of where the bytes are.
const (
	// publicTTL is how long a repository's being public or not is taken
	// as known before the upstream is asked again.
	publicTTL = 10 * time.Minute
	// grantTTL is how long credentials the upstream accepted for a
	// repository are taken as good.
	grantTTL = time.Minute
)

type access struct {
	m  *Mirror
	mu sync.Mutex
	// public is what is known of each repository.
	public map[string]publicity
	// granted are credentials accepted per repository, by their hash.
	granted *lru.Cache[[sha256.Size]byte, time.Time]
}

type publicity struct {
	Public  bool      `json:"public"`
	Checked time.Time `json:"checked"`
}

func newAccess(m *Mirror) *access {
	granted, _ := lru.New[[sha256.Size]byte, time.Time](4096)
	return &access{m: m, public: map[string]publicity{}, granted: granted}
}

func accessKey(r Ref) ds.Key {
	return refKey("/access", r)
}

// known is what this node last knew of r's access, even before a restart.
func (a *access) known(ctx context.Context, r Ref) (public, ok bool) {
	a.mu.Lock()
	p, ok := a.public[r.String()]
	a.mu.Unlock()
	if ok {
		return p.Public, true
	}
	data, err := a.m.meta.Get(ctx, accessKey(r))
	if err != nil || json.Unmarshal(data, &p) != nil {
		return false, false
	}
	return p.Public, true
}

// private tells whether r is known to be private.
func (a *access) private(r Ref) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.public[r.String()]
	return ok && !p.Public
}

// upstreamAuth is the Authorization the mirror sends upstream for r: the
// client's for a private repository when no credentials are configured,
// else none (the client's configured ones, or anonymous).
func (a *access) upstreamAuth(r Ref) string {
	if ep, ok := a.m.endpoint(r.Registry); ok && ep.Username != "" {
		return ""
	}
	if a.private(r) {
		return r.Auth
	}
	return ""
}

// answered is the upstream's answer to a check's HEAD of a manifest, sent
// with auth: a tag's resolve that would send the same request takes it.
type answered struct {
	desc ocispec.Descriptor
	auth string
}

// check tells whether r's client may read r's content; ref is the
// manifest asked for, if any (a repository's access is checked with it).
// When the check asked the upstream, it returns what that said ref is.
func (a *access) check(ctx context.Context, r Ref, ref string) (answered, error) {
	if !a.m.Mirrors(r.Registry) {
		return answered{}, fmt.Errorf("registry %q is not mirrored here: %w", r.Registry, errdefs.ErrNotFound)
	}
	if ref == "" {
		ref = "latest"
	}
	pub, ans, err := a.publicity(ctx, r, ref)
	if err != nil {
		return answered{}, err
	}
	if pub {
		return ans, nil
	}
	if r.Auth == "" {
		return answered{}, fmt.Errorf("%s needs credentials: %w", r, errdefs.ErrUnauthenticated)
	}
	key := sha256.Sum256([]byte(r.String() + "\x00" + r.Auth))
	if t, ok := a.granted.Get(key); ok && time.Since(t) < grantTTL {
		return answered{}, nil
	}
	u, err := a.m.upstream(r.Registry)
	if err != nil {
		return answered{}, err
	}
	a.m.metrics.upstreamRequests.WithLabelValues(r.Registry, "check").Inc()
	desc, err := u.Check(ctx, r.Repo, ref, r.Auth)
	a.m.noteUpstream(r.Registry, err)
	switch {
	case err == nil, errdefs.IsNotFound(err):
		a.granted.Add(key, time.Now())
		return answered{desc: desc, auth: r.Auth}, nil
	case errdefs.IsUnavailable(err):
		return answered{}, fmt.Errorf("%s is private and its upstream cannot check credentials now: %w", r, err)
	default:
		return answered{}, fmt.Errorf("%s: the upstream refuses these credentials: %w", r, errdefs.ErrPermissionDenied)
	}
}

// publicity finds out whether r is public: known lately, else asked of
// the upstream anonymously (with what it said ref is), else, while it
// does not answer, as last known.
func (a *access) publicity(ctx context.Context, r Ref, ref string) (bool, answered, error) {
	a.mu.Lock()
	p, ok := a.public[r.String()]
	a.mu.Unlock()
	if ok && time.Since(p.Checked) < publicTTL {
		return p.Public, answered{}, nil
	}
	var (
		err  error
		desc ocispec.Descriptor
	)
	if a.m.upstreamDown(r.Registry) {
		err = errUpstreamDown(r.Registry)
	} else {
		var u Upstream
		if u, err = a.m.upstream(r.Registry); err != nil {
			return false, answered{}, err
		}
		a.m.metrics.upstreamRequests.WithLabelValues(r.Registry, "check").Inc()
		desc, err = u.Check(ctx, r.Repo, ref, "")
		a.m.noteUpstream(r.Registry, err)
	}
	switch {
	case err == nil, errdefs.IsNotFound(err):
		p = publicity{Public: true, Checked: time.Now()}
	case errdefs.IsUnauthorized(err), errdefs.IsPermissionDenied(err):
		p = publicity{Public: false, Checked: time.Now()}
	default:
		// Unanswered: what was last known here, else what peers know.
		if pub, known := a.known(ctx, r); known {
			return pub, answered{}, nil
		}
		if peers := a.m.opts.Peers; peers != nil {
			if pub, known := peers.askAccess(ctx, r); known {
				return pub, answered{}, nil
			}
		}
		return false, answered{}, fmt.Errorf("%s: whether it needs credentials is not known: %w", r, err)
	}
	a.mu.Lock()
	a.public[r.String()] = p
	a.mu.Unlock()
	if data, err := json.Marshal(p); err == nil {
		_ = a.m.meta.Put(ctx, accessKey(r), data)
	}
	return p.Public, answered{desc: desc}, nil
}
