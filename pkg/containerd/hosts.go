package containerd

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/shoal-ipfs/shoal/pkg/upstream"
)

// A mirrored registry reaches containerd through its hosts directory
// (config_path): DIR/REGISTRY/hosts.toml lists the hosts tried in turn
// before the registry itself (server), DIR/_default/hosts.toml those of
// every registry without a directory of its own. shoal writes files that
// try the node's mirror first and the registry as the fallback, marked as
// its own; a hosts.toml it did not write is kept beside as
// hosts.toml.shoal-backup and put back when shoal's is removed.

// hostsMarker starts every hosts.toml shoal writes.
const hostsMarker = "# Written by shoal: `shoal containerd config --mirror REGISTRY --remove` undoes it.\n"

const backupSuffix = ".shoal-backup"

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
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return written, err
		}
		if old, err := os.ReadFile(path); err == nil && !bytes.HasPrefix(old, []byte(hostsMarker)) {
			if _, err := os.Stat(path + backupSuffix); errors.Is(err, fs.ErrNotExist) {
				if err := os.Rename(path, path+backupSuffix); err != nil {
					return written, err
				}
			}
		}
		tmp := path + ".shoal-tmp"
		if err := os.WriteFile(tmp, MirrorHosts(ep, mirrorURL), 0o644); err != nil {
			return written, err
		}
		if err := os.Rename(tmp, path); err != nil {
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
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return changed, err
		}
		if !bytes.HasPrefix(data, []byte(hostsMarker)) {
			return changed, fmt.Errorf("%s was not written by shoal: left as it is", path)
		}
		if _, serr := os.Stat(path + backupSuffix); serr == nil {
			err = os.Rename(path+backupSuffix, path)
		} else if err = os.Remove(path); err == nil {
			_ = os.Remove(filepath.Dir(path)) // only if empty
		}
		if err != nil {
			return changed, err
		}
		changed = append(changed, path)
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
