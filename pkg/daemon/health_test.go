package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ipfs/shoal/internal/testnode"
	"github.com/shoal-ipfs/shoal/pkg/config"
)

// The metrics listener answers kubelet's probes and Prometheus: /healthz
// while the process serves, /readyz naming each check, /metrics with the
// node's own series, on an address apart from the registry.
func TestHealthListener(t *testing.T) {
	a := testnode.Online(t, "/tcp/")
	n := testnode.Online(t, "/tcp/", a)
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, n, RunOptions{
			Socket:        filepath.Join(t.TempDir(), "api.sock"),
			Registry:      config.RegistryConfig{Listen: "127.0.0.1:0"},
			MetricsListen: addr,
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	get := func(path string) (int, string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := http.Get("http://" + addr + path)
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				return resp.StatusCode, string(body)
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET %s: %v", path, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if code, body := get("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d %s", code, body)
	}
	code, body := get("/readyz")
	if code != http.StatusOK {
		t.Fatalf("/readyz: %d\n%s", code, body)
	}
	for _, want := range []string{"[+]store ok", "[+]swarm ok", "[+]registry ok", "ready"} {
		if !strings.Contains(body, want) {
			t.Errorf("/readyz: no %q in\n%s", want, body)
		}
	}
	_, body = get("/metrics")
	for _, want := range []string{"shoal_build_info{", "shoal_peers_connected 1", "shoal_stored_bytes ", "shoal_swarm_received_bytes_total{"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics: no %q", want)
		}
	}
	if code, body := get("/"); code != http.StatusOK || !strings.Contains(body, "<title>shoal node</title>") {
		t.Errorf("/: %d\n%.200s", code, body)
	}
	var status statusReport
	_, body = get("/status.json")
	if err := json.Unmarshal([]byte(body), &status); err != nil {
		t.Fatalf("/status.json: %v\n%s", err, body)
	}
	if status.Node.ID == "" || len(status.Peers) != 1 || len(status.Samples) == 0 {
		t.Errorf("/status.json: node %q, %d peers, %d samples", status.Node.ID, len(status.Peers), len(status.Samples))
	}
	if code, _ := get("/v2/"); code != http.StatusNotFound {
		t.Errorf("the metrics listener serves the registry's /v2/: %d", code)
	}
}

// A check that fails, or hangs past its bound, makes the node not ready,
// and the report says which and why.
func TestReadinessNamesWhatFails(t *testing.T) {
	report, ok := runChecks(context.Background(), []readyCheck{
		{"store", func(context.Context) error { return nil }},
		{"registry", func(context.Context) error { return errors.New("connection refused") }},
		{"slow", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }},
		socketReady("containerd-plugins", filepath.Join(t.TempDir(), "none.sock")),
	})
	if ok {
		t.Fatalf("ready:\n%s", report)
	}
	for _, want := range []string{"[+]store ok", "[-]registry failed: connection refused", "[-]slow failed: context deadline exceeded", "[-]containerd-plugins failed", "not ready"} {
		if !strings.Contains(report, want) {
			t.Errorf("no %q in\n%s", want, report)
		}
	}
}

func TestDialable(t *testing.T) {
	for in, want := range map[string]string{
		"0.0.0.0:5050":   "127.0.0.1:5050",
		"[::]:5050":      "127.0.0.1:5050",
		":5050":          "127.0.0.1:5050",
		"10.0.0.7:5050":  "10.0.0.7:5050",
		"127.0.0.1:5050": "127.0.0.1:5050",
	} {
		if got := dialable(in); got != want {
			t.Errorf("dialable(%q) = %q, want %q", in, got, want)
		}
	}
}

// freeAddr is a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
