// Package layering keeps shoal's packages in their layers: what each may
// import of the others. The parts that speak OCI, HTTP and containerd sit
// above the store's contract and never reach into the node that is one
// implementation of it; the formats and clients below them import nothing
// of shoal's but each other.
package layering

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/shoal-ipfs/shoal/"

// forbidden are, per package, the shoal packages it must not depend on,
// directly or not.
var forbidden = map[string][]string{
	"pkg/upstream":        {"pkg/", "internal/"},
	"pkg/catalog":         {"pkg/"},
	"pkg/transport":       {"pkg/"},
	"pkg/blob":            {"pkg/"},
	"pkg/packs":           {"pkg/"},
	"pkg/config":          {"pkg/node", "pkg/daemon", "pkg/store", "pkg/image", "cmd/"},
	"pkg/store":           {"pkg/node", "pkg/daemon", "pkg/image", "pkg/kubo", "cmd/"},
	"pkg/store/memstore":  {"pkg/node", "pkg/daemon", "pkg/image", "pkg/kubo", "cmd/"},
	"pkg/store/storetest": {"pkg/node", "pkg/daemon", "pkg/image", "pkg/kubo", "cmd/"},
	// Who holds what, and fetching it, sit below the store's consumers and
	// beside the node, which wires them to its host and its stores.
	"pkg/routing":      {"pkg/node", "pkg/daemon", "pkg/store", "pkg/image", "pkg/mirror", "pkg/group", "pkg/retrieval", "cmd/"},
	"pkg/retrieval":    {"pkg/node", "pkg/daemon", "pkg/store", "pkg/image", "pkg/mirror", "pkg/group", "pkg/registry", "cmd/"},
	"pkg/layerindex":   {"pkg/image", "pkg/node", "pkg/registry"},
	"pkg/image":        {"pkg/node", "pkg/daemon", "pkg/registry", "pkg/mirror", "pkg/kubo", "cmd/"},
	"pkg/mirror":       {"pkg/node", "pkg/daemon", "pkg/registry", "pkg/kubo", "cmd/"},
	"pkg/registry":     {"pkg/node", "pkg/daemon", "pkg/kubo", "cmd/"},
	"pkg/lazyfs":       {"pkg/node", "pkg/daemon", "pkg/kubo", "cmd/"},
	"pkg/snapshotter":  {"pkg/node", "pkg/daemon", "pkg/kubo", "cmd/"},
	"pkg/contentstore": {"pkg/node", "pkg/daemon", "pkg/kubo", "cmd/"},
	"pkg/group":        {"pkg/node", "pkg/daemon", "pkg/kubo", "cmd/"},
	"pkg/containerd":   {"pkg/node", "pkg/daemon", "pkg/kubo", "cmd/"},
	"pkg/kubo":         {"pkg/node", "pkg/daemon", "pkg/registry", "pkg/mirror", "cmd/"},
	"pkg/node":         {"pkg/daemon", "pkg/registry", "pkg/mirror", "pkg/snapshotter", "pkg/lazyfs", "pkg/contentstore", "pkg/containerd", "pkg/group", "pkg/kubo", "cmd/"},
	// The command API (embedded node or daemon client, and the socket's
	// server) sits below the daemon's wiring of its other servers.
	"pkg/api":    {"pkg/daemon", "pkg/registry", "pkg/snapshotter", "pkg/contentstore", "cmd/"},
	"pkg/daemon": {"cmd/"},
}

func TestLayering(t *testing.T) {
	for pkg, bad := range forbidden {
		out, err := exec.Command("go", "list", "-deps", "../../"+pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			rel, ok := strings.CutPrefix(dep, module)
			if !ok || rel == pkg {
				continue
			}
			for _, b := range bad {
				if strings.HasPrefix(rel, b) {
					t.Errorf("%s depends on %s", pkg, rel)
				}
			}
		}
	}
}
