package daemon

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/shoal-ipfs/shoal/internal/testnode"
	"github.com/shoal-ipfs/shoal/pkg/config"
	"github.com/shoal-ipfs/shoal/pkg/registry"
	"golang.org/x/crypto/bcrypt"
)

func TestRegistryBeyondLoopbackNeedsCredentials(t *testing.T) {
	for _, c := range []struct {
		listen, htpasswd string
		ok               bool
	}{
		{"127.0.0.1:5050", "", true},
		{"[::1]:0", "", true},
		{"localhost:5050", "", true},
		{"0.0.0.0:5050", "", false},
		{"10.1.2.3:5050", "", false},
		{":5050", "", false},
		{"0.0.0.0:5050", "/etc/shoal/htpasswd", true},
		{"no-port", "", false},
	} {
		err := checkExposure(config.RegistryConfig{Listen: c.listen, Htpasswd: c.htpasswd})
		if (err == nil) != c.ok {
			t.Errorf("listen %q with htpasswd %q: %v", c.listen, c.htpasswd, err)
		}
	}
}

// TestMetricsBeyondLoopbackNeedCredentials: the registry's address also
// serves /metrics; beyond loopback it needs a registry user's
// credentials, whatever pull-auth says.
func TestMetricsBeyondLoopbackNeedCredentials(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	n := testnode.Offline(t, t.TempDir())
	defer n.Close()
	rg, err := registry.New(n, n.Metadata("registry"), t.TempDir(), registry.WithBasicAuth(map[string][]byte{"ci": hash}, false))
	if err != nil {
		t.Fatal(err)
	}
	metrics := prometheus.NewRegistry()
	metrics.MustRegister(collectors.NewGoCollector())
	for _, c := range []struct {
		listen     string
		user, pass string
		want       int
	}{
		{"127.0.0.1:5050", "", "", http.StatusOK},
		{"0.0.0.0:5050", "", "", http.StatusUnauthorized},
		{"0.0.0.0:5050", "ci", "guess", http.StatusUnauthorized},
		{"0.0.0.0:5050", "ci", "s3cret", http.StatusOK},
		{"10.1.2.3:5050", "", "", http.StatusUnauthorized},
	} {
		h := registryHandler(rg, metrics, config.RegistryConfig{Listen: c.listen, Htpasswd: "htpasswd"})
		req := httptest.NewRequest(http.MethodGet, "http://registry/metrics", nil)
		if c.user != "" {
			req.SetBasicAuth(c.user, c.pass)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != c.want {
			t.Errorf("listen %s, user %q: /metrics %d, want %d", c.listen, c.user, w.Code, c.want)
		}
		if w.Code == http.StatusOK && !strings.Contains(w.Body.String(), "go_goroutines") {
			t.Errorf("listen %s, user %q: /metrics without the metrics", c.listen, c.user)
		}
	}
}
