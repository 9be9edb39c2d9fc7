package registry

import (
	"context"
	"fmt"
	"net/http"

	"github.com/containerd/errdefs"
	"github.com/shoal-ipfs/shoal/pkg/mirror"
)

// WithMirror answers containerd's mirror requests (those with an ns
// parameter naming the registry the client meant) from m. Without it, or
// for a registry m does not mirror, they get 404 at once, so that
// containerd goes on to its next host.
func WithMirror(m *mirror.Mirror) Option { return func(r *Registry) { r.mirror = m } }

// serveMirror answers a mirror request for registry ns. Mirror requests
// are reads of another registry's content: the access they need is that
// registry's (package mirror), not this registry's credentials.
func (rg *Registry) serveMirror(w http.ResponseWriter, r *http.Request, rt route, ns string) error {
	if rg.mirror == nil || !rg.mirror.Mirrors(ns) {
		return errNameUnknown.with("registry %s is not mirrored here", ns)
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return errUnsupported.with("%s of a mirrored registry", r.Method)
	}
	ref := mirror.Ref{Registry: ns, Repo: rt.name, Auth: r.Header.Get("Authorization")}
	switch rt.kind {
	case kindManifest:
		ctx, cancel := context.WithTimeout(r.Context(), rg.timeout)
		defer cancel()
		data, desc, err := rg.mirror.Manifest(ctx, ref, rt.ref)
		if err != nil {
			return rg.mirrorError(w, ref, errManifestUnknown, err)
		}
		return writeDoc(w, r, desc, data)
	case kindBlob:
		d, err := parseDigest(rt.ref)
		if err != nil {
			return err
		}
		b, err := rg.mirror.Blob(r.Context(), ref, d)
		if err != nil {
			return rg.mirrorError(w, ref, errBlobUnknown, err)
		}
		if b.Open == nil {
			return rg.serveBody(w, r, b.Descriptor, "", body{open: rg.catFrom(b.Descriptor), served: b.Served, mismatch: b.Mismatch})
		}
		return rg.serveBody(w, r, b.Descriptor, "", body{open: b.Open, verified: true, served: b.Served})
	}
	return errUnsupported.with("%s %s of a mirrored registry", r.Method, r.URL.Path)
}

// mirrorError answers a request the mirror could not serve: 401 or 403
// for a private repository, else notFound, which sends containerd on to
// its next host (the upstream itself) rather than failing the pull.
func (rg *Registry) mirrorError(w http.ResponseWriter, ref mirror.Ref, notFound *apiError, err error) error {
	switch {
	case errdefs.IsUnauthorized(err):
		w.Header().Set("WWW-Authenticate", fmt.Sprintf("Basic realm=%q", "shoal mirror of "+ref.Registry))
		return errUnauthorized.with("%v", err)
	case errdefs.IsPermissionDenied(err):
		return errDenied.with("%v", err)
	case !errdefs.IsNotFound(err) && !errdefs.IsUnavailable(err):
		rg.log.Info("mirror request failed", "registry", ref.Registry, "repo", ref.Repo, "err", err)
	}
	return notFound.with("%v", err)
}
