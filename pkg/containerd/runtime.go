package containerd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"

	"github.com/BurntSushi/toml"
)

// A Kubernetes RuntimeClass lets pods choose shoal's snapshotter one pod
// at a time while containerd's default stays as it is, so that nothing
// but those pods depends on the shoal daemon (shoal's own pod included,
// whose snapshots cannot come from the daemon it is to run). containerd's
// CRI gets a runtime handler, DefaultRuntime, that is the node's default
// runtime with shoal's snapshotter, and the proxy plugin that snapshotter
// is. Both come in a drop-in file that containerd's config.toml imports
// (imports = ["/etc/containerd/conf.d/*.toml"]) and that containerd reads
// when it starts.

// DefaultRuntime is the runtime handler's name, and the RuntimeClass's.
const DefaultRuntime = "shoal"

// DefaultDropIn is where the drop-in goes.
const DefaultDropIn = "/etc/containerd/conf.d/shoal.toml"

// DefaultConfigFile is containerd's config.toml.
const DefaultConfigFile = "/etc/containerd/config.toml"

// dropInMarker starts the drop-in shoal writes.
const dropInMarker = "# Written by shoal: `shoal containerd config --runtime NAME --remove` undoes it.\n"

// criPlugins are the names of the CRI plugins' tables that hold the
// runtimes and the image settings, by config version.
func criPlugins(version int) (runtimes, images string) {
	switch {
	case version >= 3:
		return "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images"
	case version == 2:
		return "io.containerd.grpc.v1.cri", "io.containerd.grpc.v1.cri"
	default: // version 1 named the plugin by its short name
		return "cri", "cri"
	}
}

// NodeRuntime reads containerd's config.toml: its version (2 for one that
// gives none, as containerd migrates those) and the table of CRI's
// default runtime, which the handler copies so that its pods run as the
// node's others do (runtime type, SystemdCgroup, BinaryName, …).
func NodeRuntime(configTOML []byte) (version int, base map[string]any, err error) {
	var cfg map[string]any
	if _, err := toml.Decode(string(configTOML), &cfg); err != nil {
		return 0, nil, fmt.Errorf("containerd's config: %w", err)
	}
	if v, ok := cfg["version"].(int64); ok {
		version = int(v)
	}
	runtimesPlugin, _ := criPlugins(version)
	ctrd := table(table(table(cfg, "plugins"), runtimesPlugin), "containerd")
	name, _ := ctrd["default_runtime_name"].(string)
	if name == "" {
		name = "runc"
	}
	base = maps.Clone(table(table(ctrd, "runtimes"), name))
	if base == nil {
		base = map[string]any{}
	}
	return max(version, 2), base, nil
}

// maxNodeConfig bounds the containerd config.toml ReadNodeRuntime reads;
// containerd's own are a few KiB.
const maxNodeConfig = 4 << 20

// ReadNodeRuntime is NodeRuntime of the config.toml at path. A node
// without one is an error that wraps fs.ErrNotExist.
func ReadNodeRuntime(path string) (version int, base map[string]any, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxNodeConfig+1))
	if err != nil {
		return 0, nil, err
	}
	if len(data) > maxNodeConfig {
		return 0, nil, fmt.Errorf("%s: larger than %d bytes", path, maxNodeConfig)
	}
	version, base, err = NodeRuntime(data)
	if err != nil {
		return 0, nil, fmt.Errorf("%s: %w", path, err)
	}
	return version, base, nil
}

// table is the table named key in t, or nil.
func table(t map[string]any, key string) map[string]any {
	v, _ := t[key].(map[string]any)
	return v
}

// DropIn is the drop-in that gives containerd c's snapshotter as a proxy
// plugin and a CRI runtime handler named runtime: base (the node's default
// runtime, NodeRuntime) with that snapshotter.
func DropIn(c PluginConfig, runtime string, base map[string]any) ([]byte, error) {
	if runtime == "" || c.Socket == "" {
		return nil, errors.New("a drop-in needs the runtime's name and the daemon's socket")
	}
	handler := maps.Clone(base)
	if handler == nil {
		handler = map[string]any{}
	}
	if _, ok := handler["runtime_type"]; !ok {
		handler["runtime_type"] = "io.containerd.runc.v2"
	}
	handler["snapshotter"] = c.Snapshotter
	snapshotter := map[string]any{"type": "snapshot", "address": c.Socket}
	if c.Version >= 3 {
		snapshotter["exports"] = map[string]any{"root": c.Root, "enable_remote_snapshot_annotations": "true"}
	}
	runtimesPlugin, imagesPlugin := criPlugins(c.Version)
	plugins := map[string]any{
		runtimesPlugin: map[string]any{"containerd": map[string]any{"runtimes": map[string]any{runtime: handler}}},
	}
	// Pulls pass each layer's reference and digest to the snapshotter.
	annotations := map[string]any{"disable_snapshot_annotations": false}
	if c.Version >= 3 {
		plugins[imagesPlugin] = annotations
	} else {
		maps.Copy(table(plugins[runtimesPlugin].(map[string]any), "containerd"), annotations)
	}
	var b bytes.Buffer
	b.WriteString(dropInMarker)
	fmt.Fprintf(&b, `# containerd reads it when it starts, through imports in its config.toml.
# Pods whose RuntimeClass has the handler %q run on shoal's snapshotter,
# their images pulled lazily; containerd's default stays as it was.
`, runtime)
	enc := toml.NewEncoder(&b)
	enc.Indent = "  "
	doc := map[string]any{
		"version":       c.Version,
		"plugins":       plugins,
		"proxy_plugins": map[string]any{c.Snapshotter: snapshotter},
	}
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// WriteDropIn writes the drop-in at path (keeping a file shoal did not
// write as its backup) and reports whether its content changed: containerd
// needs a restart to read the new one.
func WriteDropIn(path string, data []byte) (bool, error) {
	return writeOwned(path, data, dropInMarker)
}

// RemoveDropIn removes the drop-in shoal wrote at path, putting back what
// was there, and reports whether anything changed.
func RemoveDropIn(path string) (bool, error) {
	return removeOwned(path, dropInMarker)
}
