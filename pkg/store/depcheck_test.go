package store_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/shoal-ipfs/shoal/"

// layering says which of shoal's packages each package must never depend
// on, directly or not. The node (an IPFS node: home, config, stores, host)
// sits below the daemon and the command, and beside the packages that use
// a store: they name the roles of package store, never the node, so that
// any backend (the node, a daemon's client, kubo) serves them.
var layering = map[string][]string{
	"pkg/store":           {"pkg/node", "pkg/daemon", "pkg/image", "pkg/kubo", "cmd/shoal"},
	"pkg/store/memstore":  {"pkg/node", "pkg/daemon", "pkg/kubo", "pkg/image", "cmd/shoal"},
	"pkg/store/storetest": {"pkg/node", "pkg/daemon", "pkg/kubo", "pkg/image", "cmd/shoal"},
	"pkg/catalog":         {"pkg/node", "pkg/daemon", "pkg/store", "cmd/shoal"},
	"pkg/transport":       {"pkg/node", "pkg/daemon", "pkg/store", "pkg/image", "cmd/shoal"},
	"pkg/blob":            {"pkg/node", "pkg/daemon", "pkg/image", "cmd/shoal"},
	"pkg/image":           {"pkg/node", "pkg/daemon", "pkg/kubo", "cmd/shoal"},
	"pkg/registry":        {"pkg/node", "pkg/daemon", "pkg/kubo", "cmd/shoal"},
	"pkg/mirror":          {"pkg/node", "pkg/daemon", "pkg/kubo", "pkg/registry", "cmd/shoal"},
	"pkg/kubo":            {"pkg/node", "pkg/daemon", "cmd/shoal"},
	"pkg/lazyfs":          {"pkg/node", "pkg/daemon", "pkg/kubo", "cmd/shoal"},
	"pkg/snapshotter":     {"pkg/node", "pkg/daemon", "pkg/kubo", "cmd/shoal"},
	"pkg/contentstore":    {"pkg/node", "pkg/daemon", "pkg/kubo", "cmd/shoal"},
	"pkg/containerd":      {"pkg/node", "pkg/daemon", "pkg/kubo", "cmd/shoal"},
	"pkg/group":           {"pkg/node", "pkg/daemon", "pkg/kubo", "cmd/shoal"},
	"pkg/upstream":        {"pkg/node", "pkg/daemon", "pkg/image", "cmd/shoal"},
	"pkg/routing":         {"pkg/node", "pkg/daemon", "pkg/store", "pkg/image", "pkg/mirror", "pkg/group", "cmd/shoal"},
	"pkg/node":            {"pkg/daemon", "pkg/registry", "pkg/mirror", "pkg/snapshotter", "pkg/lazyfs", "pkg/contentstore", "pkg/containerd", "pkg/group", "pkg/kubo", "cmd/shoal"},
	"pkg/daemon":          {"cmd/shoal"},
}

func TestLayering(t *testing.T) {
	for pkg, never := range layering {
		out, err := exec.Command("go", "list", "-deps", module+pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		deps := strings.Fields(string(out))
		for _, bad := range never {
			if slices.Contains(deps, module+bad) {
				t.Errorf("%s depends on %s", pkg, bad)
			}
		}
	}
}
