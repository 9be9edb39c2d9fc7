package containerd

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/shoal-ipfs/shoal/pkg/upstream"
)

// A mirrored registry reaches containerd through its hosts directory
// (config_path): DIR/REGISTRY/hosts.toml lists the hosts tried in turn
// before the registry itself (server), DIR/_default/hosts.toml those of
// every registry without a directory of its own. shoal writes files that
// try the node's mirror first and the registry as the fallback, marked as
// its own (owned.go).

// hostsMarker starts every hosts.toml shoal writes.
const hostsMarker = "# Written by shoal: `shoal containerd config --mirror REGISTRY --remove` undoes it.\n"

// DefaultHostsDir is containerd's usual config_path.
const DefaultHostsDir = "/etc/containerd/certs.d"

// MirrorHosts is the hosts.toml that sends ep's pulls and resolves to the
// mirror at mirrorURL ("http://127.0.0.1:5050") first, ep itself after.
func MirrorHosts(ep upstream.Endpoint, mirrorURL string) []byte {
	var b bytes.Buffer
	b.WriteString(hostsMarker)
	if ep.Registry != "*" {
		fmt.Fprintf(&b, "server = %q\n", ep.BaseURL())
	}
	fmt.Fprintf(&b, "\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", mirrorURL)
	return b.Bytes()
}

// HostsPath is where the hosts.toml of ep goes under dir.
func HostsPath(dir string, ep upstream.Endpoint) string {
	name := ep.Registry
	if name == "*" {
		name = "_default"
	}
	return filepath.Join(dir, name, "hosts.toml")
}

// WriteMirrorHosts writes the hosts.toml of each endpoint under dir,
// each replaced in one rename, and returns the paths written.
func WriteMirrorHosts(dir, mirrorURL string, eps []upstream.Endpoint) ([]string, error) {
	var written []string
	for _, ep := range eps {
		path := HostsPath(dir, ep)
		if _, err := writeOwned(path, MirrorHosts(ep, mirrorURL), hostsMarker); err != nil {
			return written, err
		}
		written = append(written, path)
	}
	return written, nil
}

// RemoveMirrorHosts removes the hosts.toml files shoal wrote for eps under
// dir, putting back what was there before, and returns the paths changed.
func RemoveMirrorHosts(dir string, eps []upstream.Endpoint) ([]string, error) {
	var changed []string
	for _, ep := range eps {
		path := HostsPath(dir, ep)
		removed, err := removeOwned(path, hostsMarker)
		if err != nil {
			return changed, err
		}
		if removed {
			changed = append(changed, path)
		}
	}
	return changed, nil
}

// MirrorURL is the URL containerd reaches a registry address at.
func MirrorURL(addr string, tls bool) string {
	if tls {
		return "https://" + addr
	}
	return "http://" + strings.TrimPrefix(addr, "http://")
}
