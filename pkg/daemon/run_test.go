package daemon

import (
	"testing"

	"github.com/shoal-ipfs/shoal/pkg/node"
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
		err := checkExposure(node.RegistryConfig{Listen: c.listen, Htpasswd: c.htpasswd})
		if (err == nil) != c.ok {
			t.Errorf("listen %q with htpasswd %q: %v", c.listen, c.htpasswd, err)
		}
	}
}
