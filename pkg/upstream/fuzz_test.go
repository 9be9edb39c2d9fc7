package upstream

import (
	"strings"
	"testing"
)

func FuzzParseChallenge(f *testing.F) {
	for _, s := range []string{
		`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull"`,
		`Basic realm="private"`,
		`Basic realm="a", Bearer realm="b\"c", error="insufficient_scope"`,
		`Bearer realm=`, `"`, `Bearer realm="x`, `Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple"`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cs, err := ParseChallenge(s)
		if err != nil {
			return
		}
		for _, c := range cs {
			if c.Scheme == "" {
				t.Fatalf("%q: a challenge without a scheme", s)
			}
		}
	})
}

func FuzzParseToken(f *testing.F) {
	for _, s := range []string{`{"token":"abc","expires_in":300}`, `{"access_token":"x"}`, `{}`, `{"token":"a\nb"}`, `[`, strings.Repeat("a", maxTokenResponse+1)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tok, ttl, err := ParseToken(data)
		if err == nil && (tok == "" || ttl <= 0 || strings.ContainsAny(tok, "\r\n")) {
			t.Fatalf("%q: token %q ttl %s", data, tok, ttl)
		}
	})
}

func FuzzParseMirror(f *testing.F) {
	for _, s := range []string{"docker.io", "127.0.0.1:5000=http://127.0.0.1:5000", "*", "*=http://x", "ghcr.io=https://ghcr.io/", "x=ftp://y", "=", "a=http://u:p@h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ep, err := ParseMirror(s)
		if err != nil {
			return
		}
		if ep.Registry == "" || strings.Contains(ep.BaseURL(), "@") || !strings.HasPrefix(ep.BaseURL(), "http") {
			t.Fatalf("%q: %+v %s", s, ep, ep.BaseURL())
		}
	})
}
