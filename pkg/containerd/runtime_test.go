package containerd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	srvconfig "github.com/containerd/containerd/v2/cmd/containerd/server/config"
)

// The drop-in, imported by a node's config.toml and loaded by containerd's
// own loader, adds the proxy plugin and a runtime handler that is the
// node's default runtime (its options kept) on shoal's snapshotter, and
// leaves the node's own runtime as it was.
func TestDropInAsContainerdLoadsIt(t *testing.T) {
	for _, tc := range []struct {
		version int
		node    string
	}{
		{3, `version = 3
imports = ["%s/conf.d/*.toml"]
[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = "crun"
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.crun]
  runtime_type = "io.containerd.runc.v2"
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.crun.options]
    BinaryName = "/usr/bin/crun"
    SystemdCgroup = true
`},
		{2, `version = 2
imports = ["%s/conf.d/*.toml"]
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    SystemdCgroup = true
`},
	} {
		dir := t.TempDir()
		main := filepath.Join(dir, "config.toml")
		node := strings.Replace(tc.node, "%s", dir, 1)
		if err := os.WriteFile(main, []byte(node), 0o644); err != nil {
			t.Fatal(err)
		}
		version, base, err := NodeRuntime([]byte(node))
		if err != nil || version != tc.version {
			t.Fatalf("version %d: read %d, %v", tc.version, version, err)
		}
		c := PluginConfig{Version: version, Socket: "/var/lib/shoal/containerd.sock", Root: "/var/lib/shoal/snapshotter", Snapshotter: DefaultSnapshotter}
		data, err := DropIn(c, DefaultRuntime, base)
		if err != nil {
			t.Fatal(err)
		}
		if changed, err := WriteDropIn(filepath.Join(dir, "conf.d", "shoal.toml"), data); err != nil || !changed {
			t.Fatalf("write: %v, %v", changed, err)
		}

		var cfg srvconfig.Config
		if err := srvconfig.LoadConfig(context.Background(), main, &cfg); err != nil {
			t.Fatalf("version %d: containerd does not load it: %v\n%s", version, err, data)
		}
		if p := cfg.ProxyPlugins[DefaultSnapshotter]; p.Type != "snapshot" || p.Address != c.Socket {
			t.Errorf("version %d: proxy plugin %+v", version, p)
		}
		runtimesPlugin, _ := criPlugins(version)
		runtimes := table(table(table(cfg.Plugins, runtimesPlugin), "containerd"), "runtimes")
		own := "runc"
		if version == 3 {
			own = "crun"
		}
		if opts := table(table(runtimes, own), "options"); opts["SystemdCgroup"] != true {
			t.Errorf("version %d: the node's runtime lost its options: %v", version, runtimes)
		}
		shoal := table(runtimes, DefaultRuntime)
		if shoal["snapshotter"] != DefaultSnapshotter || shoal["runtime_type"] != "io.containerd.runc.v2" || table(shoal, "options")["SystemdCgroup"] != true {
			t.Errorf("version %d: the handler is %v", version, shoal)
		}
		if version == 3 && table(table(runtimes, own), "options")["BinaryName"] != table(shoal, "options")["BinaryName"] {
			t.Errorf("the handler is not the node's default runtime: %v", shoal)
		}
	}
}

func TestDropInKeepsWhatWasThere(t *testing.T) {
	path := filepath.Join(t.TempDir(), "conf.d", "shoal.toml")
	data, err := DropIn(PluginConfig{Version: 3, Socket: "/s", Root: "/r", Snapshotter: DefaultSnapshotter}, DefaultRuntime, nil)
	if err != nil {
		t.Fatal(err)
	}
	if changed, err := WriteDropIn(path, data); err != nil || !changed {
		t.Fatalf("first write: %v, %v", changed, err)
	}
	if changed, err := WriteDropIn(path, data); err != nil || changed {
		t.Fatalf("the same again: changed %v, %v", changed, err)
	}
	if removed, err := RemoveDropIn(path); err != nil || !removed {
		t.Fatalf("remove: %v, %v", removed, err)
	}
	if _, err := os.Stat(filepath.Dir(path)); !os.IsNotExist(err) {
		t.Errorf("an empty conf.d is left: %v", err)
	}
	if removed, err := RemoveDropIn(path); err != nil || removed {
		t.Fatalf("removing what is not there: %v, %v", removed, err)
	}
	os.MkdirAll(filepath.Dir(path), 0o755)
	os.WriteFile(path, []byte("# the operator's\n"), 0o644)
	if _, err := RemoveDropIn(path); err == nil {
		t.Fatal("removed a file shoal did not write")
	}
}

// FuzzNodeRuntime: any config.toml is read without a panic, and the
// drop-in made from what was read is TOML naming the handler on shoal's
// snapshotter.
func FuzzNodeRuntime(f *testing.F) {
	f.Add([]byte("version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]\n  SystemdCgroup = true\n"))
	f.Add([]byte("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  default_runtime_name = \"crun\"\n"))
	f.Add([]byte("[plugins.cri.containerd.runtimes.runc]\nruntime_type = 7\nsnapshotter = [1, 2]\n"))
	f.Add([]byte("version = 3\nplugins = 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		version, base, err := NodeRuntime(data)
		if err != nil {
			return
		}
		if version < 2 {
			t.Fatalf("version %d", version)
		}
		out, err := DropIn(PluginConfig{Version: version, Socket: "/s", Root: "/r", Snapshotter: DefaultSnapshotter}, DefaultRuntime, base)
		if err != nil {
			return // a value the encoder cannot write is refused, not written
		}
		var cfg map[string]any
		if _, err := toml.Decode(string(out), &cfg); err != nil {
			t.Fatalf("the drop-in is not TOML: %v\n%s", err, out)
		}
		runtimesPlugin, _ := criPlugins(version)
		handler := table(table(table(table(table(cfg, "plugins"), runtimesPlugin), "containerd"), "runtimes"), DefaultRuntime)
		if handler["snapshotter"] != DefaultSnapshotter {
			t.Fatalf("the handler is %v\n%s", handler, out)
		}
	})
}
