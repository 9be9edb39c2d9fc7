package snapshotter

import (
	"context"
	"testing"

	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/errdefs"
	"github.com/ipfs/go-cid"
	"github.com/opencontainers/go-digest"
	"github.com/shoal-ipfs/shoal/pkg/registry"
)

// FuzzRootOf feeds the labels containerd copies from image manifests,
// which anyone who builds an image controls, to the resolver's parser.
func FuzzRootOf(f *testing.F) {
	f.Add("", "127.0.0.1:5050/ipfs/bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy:latest", "sha256:"+digest.FromString("m").Encoded())
	f.Add("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy", "", "")
	f.Add("", "docker.io/library/debian:12@sha256:00", "nonsense")
	f.Add("Qm", "UPPER/Case", "sha256:")
	f.Fuzz(func(t *testing.T, root, ref, manifest string) {
		labels := map[string]string{LabelRoot: root, snapshotters.TargetRefLabel: ref, snapshotters.TargetManifestDigestLabel: manifest}
		c, err := rootOf(context.Background(), labels, func(_ context.Context, name string, _ digest.Digest) (cid.Cid, bool) {
			return registry.IPFSRoot(name)
		})
		if err == nil && !c.Defined() {
			t.Fatalf("no error and no CID for %q", labels)
		}
		if err != nil && root == "" && !errdefs.IsNotFound(err) {
			t.Fatalf("a reference that names no IPFS image must mean an ordinary snapshot: %v", err)
		}
	})
}
