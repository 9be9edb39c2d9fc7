package containerd

import (
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// The fragment is TOML that names the daemon's socket as the proxy
// plugins' address, for containerd 1.x (version 2) and 2.x (version 3),
// with and without shoal's content store.
func TestConfigFragmentIsTOMLNamingTheSocket(t *testing.T) {
	for _, version := range []int{2, 3} {
		for _, content := range []bool{false, true} {
			var b strings.Builder
			c := PluginConfig{Version: version, Content: content, Socket: "/run/shoal/containerd.sock", Root: "/var/lib/shoal/snapshotter",
				Registry: "127.0.0.1:5050", Platform: "linux/amd64", HostsDir: "/etc/containerd/certs.d", Snapshotter: DefaultSnapshotter}
			if err := WriteConfig(&b, c); err != nil {
				t.Fatal(err)
			}
			var cfg struct {
				Version         int
				DisabledPlugins []string `toml:"disabled_plugins"`
				ProxyPlugins    map[string]struct {
					Type, Address string
				} `toml:"proxy_plugins"`
			}
			if _, err := toml.Decode(b.String(), &cfg); err != nil {
				t.Fatalf("version %d, content %v: %v\n%s", version, content, err, b.String())
			}
			snap := cfg.ProxyPlugins[DefaultSnapshotter]
			if cfg.Version != version || snap.Type != "snapshot" || snap.Address != c.Socket {
				t.Fatalf("version %d, content %v: %+v", version, content, cfg)
			}
			store, ok := cfg.ProxyPlugins[DefaultSnapshotter+"-content"]
			if ok != content || (content && (store.Type != "content" || store.Address != c.Socket || len(cfg.DisabledPlugins) != 1)) {
				t.Fatalf("version %d, content %v: content plugin %+v, disabled %v", version, content, store, cfg.DisabledPlugins)
			}
			if version == 3 && !strings.Contains(b.String(), `root = "`+c.Root+`"`) {
				t.Fatalf("containerd 2.x is not told the snapshotter's root:\n%s", b.String())
			}
		}
	}
}
