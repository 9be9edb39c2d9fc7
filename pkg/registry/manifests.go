package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/transport"
)

func (rg *Registry) getManifest(w http.ResponseWriter, r *http.Request, rt route) error {
	ctx := r.Context()
	if root, ok := IPFSRoot(rt.name); ok {
		t, err := rg.trees.get(ctx, root)
		if err != nil {
			return err
		}
		d := t.Plain
		if isDigest(rt.ref) {
			var ok bool
			if d, ok = t.Blobs[digest.Digest(rt.ref)]; !ok || t.Docs[d.Digest] == nil {
				return errManifestUnknown.with("%s is not a manifest of image %s", rt.ref, root)
			}
		}
		w.Header().Set(RootHeader, root.String())
		return writeDoc(w, r, d, t.Docs[d.Digest])
	}
	d, m, err := rg.resolve(ctx, rt.name, rt.ref)
	if err != nil {
		return err
	}
	if m.Root != "" {
		w.Header().Set(RootHeader, m.Root)
	}
	desc, err := blobRecord{CID: m.CID, Size: m.Size}.descriptor(d, m.MediaType)
	if err != nil {
		return err
	}
	if r.Method == http.MethodHead {
		return writeDoc(w, r, desc, nil)
	}
	data, err := rg.readDoc(ctx, desc)
	if err != nil {
		return err
	}
	return writeDoc(w, r, desc, data)
}

// readDoc reads a stored manifest whole and checks it against its digest.
func (rg *Registry) readDoc(ctx context.Context, d ocispec.Descriptor) ([]byte, error) {
	c, err := image.CIDOf(d)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, rg.timeout)
	defer cancel()
	rc, err := rg.store.Cat(ctx, c)
	if err != nil {
		return nil, rg.unavailable(ctx, d, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, rg.maxDoc+1))
	if err != nil {
		return nil, rg.unavailable(ctx, d, err)
	}
	if err := transport.VerifyReader(bytes.NewReader(data), d); err != nil {
		return nil, fmt.Errorf("manifest %s (%s): %w", d.Digest, c, err)
	}
	return data, nil
}

// writeDoc answers with a manifest's bytes, or for HEAD its headers.
func writeDoc(w http.ResponseWriter, r *http.Request, d ocispec.Descriptor, data []byte) error {
	h := w.Header()
	h.Set("Content-Type", d.MediaType)
	h.Set("Docker-Content-Digest", d.Digest.String())
	h.Set("Content-Length", strconv.FormatInt(d.Size, 10))
	h.Set("Etag", `"`+d.Digest.String()+`"`)
	if r.Method == http.MethodHead {
		return nil
	}
	_, _ = w.Write(data)
	return nil
}

// manifestFields are the parts of an index or manifest the registry reads.
type manifestFields struct {
	SchemaVersion int                  `json:"schemaVersion"`
	MediaType     string               `json:"mediaType"`
	ArtifactType  string               `json:"artifactType"`
	Config        *ocispec.Descriptor  `json:"config"`
	Layers        []ocispec.Descriptor `json:"layers"`
	Manifests     []ocispec.Descriptor `json:"manifests"`
	Subject       *ocispec.Descriptor  `json:"subject"`
	Annotations   map[string]string    `json:"annotations"`
}

// parseManifest checks an uploaded index or manifest.
func parseManifest(contentType string, data []byte) (mediaType string, f manifestFields, err error) {
	if err := json.Unmarshal(data, &f); err != nil {
		return "", f, errManifestInvalid.with("not JSON: %v", err)
	}
	mediaType, _, _ = mime.ParseMediaType(contentType)
	if mediaType == "" || mediaType == "application/octet-stream" || mediaType == "application/json" {
		mediaType = f.MediaType
	}
	if f.MediaType != "" && f.MediaType != mediaType {
		return "", f, errManifestInvalid.with("Content-Type %q but the manifest says %q", mediaType, f.MediaType)
	}
	if !transport.IsIndex(mediaType) && !transport.IsManifest(mediaType) {
		return "", f, errManifestInvalid.with("media type %q is neither an image index nor an image manifest", mediaType)
	}
	if f.SchemaVersion != 2 {
		return "", f, errManifestInvalid.with("schemaVersion %d, want 2", f.SchemaVersion)
	}
	if transport.IsManifest(mediaType) && f.Config == nil {
		return "", f, errManifestInvalid.with("an image manifest needs a config")
	}
	if len(f.Manifests) > image.MaxIndexManifests || len(f.Layers) > image.MaxManifestLayers {
		return "", f, errManifestInvalid.with("%d manifests and %d layers; an index may name %d manifests, a manifest %d layers",
			len(f.Manifests), len(f.Layers), image.MaxIndexManifests, image.MaxManifestLayers)
	}
	all := append(append(append([]ocispec.Descriptor{}, f.Layers...), f.Manifests...), f.subject()...)
	if f.Config != nil {
		all = append(all, *f.Config)
	}
	for _, d := range all {
		if err := transport.CheckDescriptor(d); err != nil {
			return "", f, errManifestInvalid.with("%v", err)
		}
	}
	return mediaType, f, nil
}

func (f manifestFields) subject() []ocispec.Descriptor {
	if f.Subject == nil {
		return nil
	}
	return []ocispec.Descriptor{*f.Subject}
}

// requiredBlobs are the blobs that must be in the repository before a
// manifest naming them: the config and the layers that are meant to be
// distributed. Index entries, subjects and layers fetched from their own
// urls may be elsewhere.
func (f manifestFields) requiredBlobs() []ocispec.Descriptor {
	if f.Config == nil {
		return nil
	}
	out := []ocispec.Descriptor{*f.Config}
	for _, l := range f.Layers {
		if len(l.URLs) > 0 || strings.Contains(l.MediaType, ".nondistributable.") || strings.Contains(l.MediaType, ".foreign.") {
			continue
		}
		out = append(out, l)
	}
	return out
}

func (rg *Registry) putManifest(w http.ResponseWriter, r *http.Request, rt route) error {
	ctx := r.Context()
	data, err := io.ReadAll(io.LimitReader(r.Body, rg.maxDoc+1))
	if err != nil {
		return errManifestInvalid.with("reading the body: %v", err)
	}
	if int64(len(data)) > rg.maxDoc {
		return errTooLarge.with("manifests are limited to %d bytes", rg.maxDoc)
	}
	d := digest.SHA256.FromBytes(data)
	if isDigest(rt.ref) {
		want, err := parseDigest(rt.ref)
		if err != nil {
			return err
		}
		if d = want.Algorithm().FromBytes(data); d != want {
			return errDigestInvalid.with("the manifest's %s is %s", want.Algorithm(), d)
		}
	}
	mediaType, f, err := parseManifest(r.Header.Get("Content-Type"), data)
	if err != nil {
		return err
	}
	for _, b := range f.requiredBlobs() {
		if _, ok, err := rg.blob(ctx, rt.name, b.Digest); err != nil {
			return err
		} else if !ok {
			return errManifestBlobUnknown.with("%s", b.Digest)
		}
	}
	c, err := rg.addHeld(ctx, manifestHold(rt.name, d), bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("manifest %s: %w", d, err)
	}
	rec := manifestRecord{MediaType: mediaType, CID: c.String(), Size: int64(len(data)), ArtifactType: f.ArtifactType, Annotations: f.Annotations}
	if rec.ArtifactType == "" && f.Config != nil {
		rec.ArtifactType = f.Config.MediaType
	}
	if f.Subject != nil {
		rec.Subject = f.Subject.Digest
	}
	tags := r.URL.Query()["tag"]
	if !isDigest(rt.ref) {
		tags = append(tags, rt.ref)
	}
	for _, t := range tags {
		if !tagRE.MatchString(t) {
			return errManifestInvalid.with("tag %q", t)
		}
	}
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
	if root, err := rg.convert(ctx, rt.name, r.Host, tags, desc, c); err != nil {
		rg.log.Info("registry: manifest kept as pushed, not converted to an IPFS image", "name", rt.name, "digest", d, "reason", err)
	} else {
		rec.Root = root.String()
		if err := rg.meta.Put(ctx, rootKey(rec.Root, rt.name, d), nil); err != nil {
			return err
		}
		w.Header().Set(RootHeader, rec.Root)
	}
	if err := rg.putJSON(ctx, manifestKey(rt.name, d), rec); err != nil {
		return err
	}
	if f.Subject != nil {
		ref := ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: rec.Size, ArtifactType: rec.ArtifactType, Annotations: rec.Annotations}
		if err := rg.putJSON(ctx, referrerKey(rt.name, f.Subject.Digest, d), ref); err != nil {
			return err
		}
		w.Header().Set("OCI-Subject", f.Subject.Digest.String())
	}
	for _, t := range tags {
		if err := rg.meta.Put(ctx, tagKey(rt.name, t), []byte(d)); err != nil {
			return err
		}
		w.Header().Add("OCI-Tag", t)
	}
	if err := rg.meta.Put(ctx, nameKey(rt.name), nil); err != nil {
		return err
	}
	if err := rg.meta.Sync(ctx, ds.NewKey("/")); err != nil {
		return err
	}
	w.Header().Set("Location", "/v2/"+rt.name+"/manifests/"+d.String())
	w.Header().Set("Docker-Content-Digest", d.String())
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}

// convert makes the pushed manifest an image in shoal's format, pinned
// and listed, and returns its root CID. Manifests whose blobs are not all
// here (foreign layers, a sparse index) stay as they were pushed.
func (rg *Registry) convert(ctx context.Context, name, host string, tags []string, top ocispec.Descriptor, topCID cid.Cid) (cid.Cid, error) {
	ref := host + "/" + name + "@" + top.Digest.String()
	if len(tags) > 0 {
		ref = host + "/" + name + ":" + tags[len(tags)-1]
	}
	res, err := image.Push(ctx, rg.store, &repoSource{rg: rg, name: name, ref: ref, top: top, topCID: topCID}, image.PushOptions{Index: true})
	if err != nil {
		return cid.Undef, err
	}
	for _, u := range res.Unindexed {
		rg.log.Info("registry: a layer of a pushed image has no index; a mount fetches it whole", "name", name, "layer", u.Digest, "reason", u.Err)
	}
	return res.Root, nil
}

// repoSource reads an image pushed to a repository of this registry.
type repoSource struct {
	rg   *Registry
	name string
	ref  string
	top  ocispec.Descriptor
	// topCID holds the manifest being put, which has no record yet.
	topCID cid.Cid
}

func (s *repoSource) Reference() string                                { return s.ref }
func (s *repoSource) Root(context.Context) (ocispec.Descriptor, error) { return s.top, nil }
func (s *repoSource) Close() error                                     { return nil }

func (s *repoSource) Open(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	if d.Digest == s.top.Digest {
		return s.rg.store.Cat(ctx, s.topCID)
	}
	var c string
	if transport.IsIndex(d.MediaType) || transport.IsManifest(d.MediaType) {
		m, ok, err := s.rg.manifest(ctx, s.name, d.Digest)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("manifest %s: %w", d.Digest, errManifestUnknown)
		}
		c = m.CID
	} else {
		b, ok, err := s.rg.blob(ctx, s.name, d.Digest)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("blob %s: %w", d.Digest, errBlobUnknown)
		}
		c = b.CID
	}
	parsed, err := cid.Decode(c)
	if err != nil {
		return nil, err
	}
	return s.rg.store.Cat(ctx, parsed)
}

// StoredCID lets the conversion reference uploaded layers instead of
// adding them again.
func (s *repoSource) StoredCID(d ocispec.Descriptor) (cid.Cid, bool) {
	if transport.IsIndex(d.MediaType) || transport.IsManifest(d.MediaType) {
		return cid.Undef, false
	}
	b, ok, err := s.rg.blob(context.Background(), s.name, d.Digest)
	if err != nil || !ok {
		return cid.Undef, false
	}
	c, err := cid.Decode(b.CID)
	return c, err == nil
}

func (rg *Registry) deleteManifest(w http.ResponseWriter, r *http.Request, rt route) error {
	ctx := r.Context()
	if !isDigest(rt.ref) {
		if ok, err := rg.meta.Has(ctx, tagKey(rt.name, rt.ref)); err != nil {
			return err
		} else if !ok {
			return errManifestUnknown.with("%s:%s", rt.name, rt.ref)
		}
		if err := rg.meta.Delete(ctx, tagKey(rt.name, rt.ref)); err != nil {
			return err
		}
		w.WriteHeader(http.StatusAccepted)
		return rg.meta.Sync(ctx, repoKey(rt.name))
	}
	d, m, err := rg.resolve(ctx, rt.name, rt.ref)
	if err != nil {
		return err
	}
	tags, err := rg.keys(ctx, repoKey(rt.name).ChildString("tag"))
	if err != nil {
		return err
	}
	for _, t := range tags {
		if v, err := rg.meta.Get(ctx, tagKey(rt.name, t)); err == nil && digest.Digest(v) == d {
			if err := rg.meta.Delete(ctx, tagKey(rt.name, t)); err != nil {
				return err
			}
		}
	}
	if m.Subject != "" {
		if err := rg.meta.Delete(ctx, referrerKey(rt.name, m.Subject, d)); err != nil {
			return err
		}
	}
	if err := rg.meta.Delete(ctx, manifestKey(rt.name, d)); err != nil {
		return err
	}
	if m.Root != "" {
		if err := rg.dropRoot(ctx, m.Root, rt.name, d); err != nil {
			return err
		}
	}
	if err := rg.meta.Sync(ctx, ds.NewKey("/")); err != nil {
		return err
	}
	if err := rg.store.Release(ctx, manifestHold(rt.name, d)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// dropRoot forgets that manifest d of name was converted to root, and
// unpins the image once no manifest of any repository converts to it.
func (rg *Registry) dropRoot(ctx context.Context, root, name string, d digest.Digest) error {
	if err := rg.meta.Delete(ctx, rootKey(root, name, d)); err != nil {
		return err
	}
	rest, err := rg.keys(ctx, ds.NewKey("/root").ChildString(root))
	if err != nil || len(rest) > 0 {
		return err
	}
	c, err := cid.Decode(root)
	if err != nil {
		return err
	}
	if err := rg.store.RemoveImage(ctx, c); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	return nil
}

func (rg *Registry) getReferrers(w http.ResponseWriter, r *http.Request, rt route) error {
	ctx := r.Context()
	subject, err := parseDigest(rt.ref)
	if err != nil {
		return err
	}
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{}}
	idx.SchemaVersion = 2
	if _, ok := IPFSRoot(rt.name); !ok {
		filter := r.URL.Query().Get("artifactType")
		digests, err := rg.keys(ctx, repoKey(rt.name).ChildString("referrer").ChildString(subject.String()))
		if err != nil {
			return err
		}
		for _, s := range digests {
			var d ocispec.Descriptor
			if ok, err := rg.getJSON(ctx, referrerKey(rt.name, subject, digest.Digest(s)), &d); err != nil {
				return err
			} else if !ok || (filter != "" && d.ArtifactType != filter) {
				continue
			}
			idx.Manifests = append(idx.Manifests, d)
		}
		if filter != "" {
			w.Header().Set("OCI-Filters-Applied", "artifactType")
		}
	}
	return writeJSON(w, r, ocispec.MediaTypeImageIndex, idx)
}
