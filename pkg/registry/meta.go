package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/pkg/image"
)

// The registry's records, in the node's metadata store:
//
//	/name/NAME                      a repository exists
//	/repo/NAME/blob/DIGEST          blobRecord: a blob linked into a repository
//	/repo/NAME/manifest/DIGEST      manifestRecord
//	/repo/NAME/tag/TAG              the manifest digest it points at
//	/repo/NAME/referrer/SUBJ/DIGEST a manifest whose subject is SUBJ
//	/digest/DIGEST                  blobRecord: where any repository's blob lives
//	/root/CID/NAME@DIGEST           a manifest converted to the image CID
//
// NAME has its slashes replaced by "+", which names cannot hold, so that
// one repository's keys never nest under another's.

type blobRecord struct {
	CID  string `json:"cid"`
	Size int64  `json:"size"`
}

func (b blobRecord) descriptor(d digest.Digest, mediaType string) (ocispec.Descriptor, error) {
	c, err := cid.Decode(b.CID)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("blob %s: record CID %q: %w", d, b.CID, err)
	}
	return image.WithCID(ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: b.Size}, c), nil
}

type manifestRecord struct {
	MediaType    string            `json:"mediaType"`
	CID          string            `json:"cid"` // the bytes as pushed
	Size         int64             `json:"size"`
	Root         string            `json:"root,omitempty"` // the image converted to shoal's format
	Subject      digest.Digest     `json:"subject,omitempty"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

func encName(name string) string { return strings.ReplaceAll(name, "/", "+") }
func decName(s string) string    { return strings.ReplaceAll(s, "+", "/") }

func repoKey(name string) ds.Key { return ds.NewKey("/repo").ChildString(encName(name)) }
func nameKey(name string) ds.Key { return ds.NewKey("/name").ChildString(encName(name)) }
func blobKey(name string, d digest.Digest) ds.Key {
	return repoKey(name).ChildString("blob").ChildString(d.String())
}
func manifestKey(name string, d digest.Digest) ds.Key {
	return repoKey(name).ChildString("manifest").ChildString(d.String())
}
func tagKey(name, tag string) ds.Key { return repoKey(name).ChildString("tag").ChildString(tag) }
func referrerKey(name string, subject, d digest.Digest) ds.Key {
	return repoKey(name).ChildString("referrer").ChildString(subject.String()).ChildString(d.String())
}
func digestKey(d digest.Digest) ds.Key { return ds.NewKey("/digest").ChildString(d.String()) }
func rootKey(root string, name string, d digest.Digest) ds.Key {
	return ds.NewKey("/root").ChildString(root).ChildString(encName(name) + "@" + d.String())
}

// Hold names under which the node pins what the registry keeps.
func blobHold(name string, d digest.Digest) string {
	return "registry/" + encName(name) + "/blob/" + d.String()
}
func manifestHold(name string, d digest.Digest) string {
	return "registry/" + encName(name) + "/manifest/" + d.String()
}

func (rg *Registry) getJSON(ctx context.Context, k ds.Key, v any) (bool, error) {
	data, err := rg.meta.Get(ctx, k)
	if errors.Is(err, ds.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, json.Unmarshal(data, v)
}

func (rg *Registry) putJSON(ctx context.Context, k ds.Key, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return rg.meta.Put(ctx, k, data)
}

// keys lists the last path segment of every key under prefix, sorted.
func (rg *Registry) keys(ctx context.Context, prefix ds.Key) ([]string, error) {
	res, err := rg.meta.Query(ctx, query.Query{Prefix: prefix.String(), KeysOnly: true})
	if err != nil {
		return nil, err
	}
	defer res.Close()
	var out []string
	for e := range res.Next() {
		if e.Error != nil {
			return nil, e.Error
		}
		out = append(out, ds.RawKey(e.Key).BaseNamespace())
	}
	sort.Strings(out)
	return out, nil
}

func (rg *Registry) blob(ctx context.Context, name string, d digest.Digest) (blobRecord, bool, error) {
	var b blobRecord
	ok, err := rg.getJSON(ctx, blobKey(name, d), &b)
	return b, ok, err
}

func (rg *Registry) manifest(ctx context.Context, name string, d digest.Digest) (manifestRecord, bool, error) {
	var m manifestRecord
	ok, err := rg.getJSON(ctx, manifestKey(name, d), &m)
	return m, ok, err
}

// resolve turns a tag or digest into the manifest's digest and record.
func (rg *Registry) resolve(ctx context.Context, name, ref string) (digest.Digest, manifestRecord, error) {
	d := digest.Digest(ref)
	if !isDigest(ref) {
		data, err := rg.meta.Get(ctx, tagKey(name, ref))
		if errors.Is(err, ds.ErrNotFound) {
			return "", manifestRecord{}, errManifestUnknown.with("%s:%s", name, ref)
		}
		if err != nil {
			return "", manifestRecord{}, err
		}
		d = digest.Digest(data)
	}
	m, ok, err := rg.manifest(ctx, name, d)
	if err != nil {
		return "", m, err
	}
	if !ok {
		return "", m, errManifestUnknown.with("%s@%s", name, d)
	}
	return d, m, nil
}

// RootOf is the image CID that manifest d of repository name stands for:
// the one an ipfs/CID name gives, or the one a pushed manifest was
// converted to. A snapshotter uses it to find the IPFS layers of an image
// containerd pulled from this registry.
func (rg *Registry) RootOf(ctx context.Context, name string, d digest.Digest) (cid.Cid, bool) {
	if root, ok := IPFSRoot(name); ok {
		return root, true
	}
	m, ok, err := rg.manifest(ctx, name, d)
	if err != nil || !ok || m.Root == "" {
		return cid.Undef, false
	}
	root, err := cid.Decode(m.Root)
	return root, err == nil
}
