package containerd

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/shoal-ipfs/shoal/pkg/upstream"
)

// hostsFor loads dir as containerd does and returns the hosts it tries
// for registry, in order.
func hostsFor(t *testing.T, dir, registry string) []docker.RegistryHost {
	t.Helper()
	hosts, err := config.ConfigureHosts(context.Background(), config.HostOptions{HostDir: config.HostDirFromRoot(dir)})(registry)
	if err != nil {
		t.Fatal(err)
	}
	return hosts
}

func TestMirrorHostsAsContainerdReadsThem(t *testing.T) {
	dir := t.TempDir()
	eps := []upstream.Endpoint{{Registry: "docker.io"}, {Registry: "127.0.0.1:5000", URL: "http://127.0.0.1:5000"}, {Registry: "*"}}
	if _, err := WriteMirrorHosts(dir, "http://127.0.0.1:5050", eps); err != nil {
		t.Fatal(err)
	}
	for registry, want := range map[string][2]string{
		"docker.io":      {"https", "registry-1.docker.io"},
		"127.0.0.1:5000": {"http", "127.0.0.1:5000"},
		"quay.io":        {"https", "quay.io"},
	} {
		hosts := hostsFor(t, dir, registry)
		if len(hosts) != 2 {
			t.Fatalf("%s: %d hosts, want the mirror and the registry", registry, len(hosts))
		}
		m, up := hosts[0], hosts[1]
		if m.Scheme != "http" || m.Host != "127.0.0.1:5050" || m.Path != "/v2" || m.Capabilities != docker.HostCapabilityPull|docker.HostCapabilityResolve {
			t.Errorf("%s: the mirror is %+v", registry, m)
		}
		if up.Scheme != want[0] || up.Host != want[1] {
			t.Errorf("%s: the fallback is %s://%s, want %s://%s", registry, up.Scheme, up.Host, want[0], want[1])
		}
	}
}

func TestMirrorHostsKeepWhatWasThere(t *testing.T) {
	dir := t.TempDir()
	eps := []upstream.Endpoint{{Registry: "ghcr.io"}}
	path := HostsPath(dir, eps[0])
	os.MkdirAll(filepath.Dir(path), 0o755)
	mine := []byte("server = \"https://ghcr.io\"\n# the operator's\n")
	if err := os.WriteFile(path, mine, 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 { // writing twice keeps the first backup
		if _, err := WriteMirrorHosts(dir, "http://127.0.0.1:5050", eps); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := os.ReadFile(path + backupSuffix); string(got) != string(mine) {
		t.Fatalf("backup: %q", got)
	}
	if _, err := RemoveMirrorHosts(dir, eps); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != string(mine) {
		t.Fatalf("after remove: %q, want the operator's file back", got)
	}
	if _, err := RemoveMirrorHosts(dir, eps); err == nil {
		t.Fatal("removed a hosts.toml shoal did not write")
	}
}
