package mirror

import (
	"bufio"
	"bytes"
	"testing"
)

func FuzzParseNamespace(f *testing.F) {
	for _, s := range []string{"docker.io", "127.0.0.1:5000", "[::1]:5000", "[::1]", "ghcr.io:", "a..b", "x:0", "-a.b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ParseNamespace(s) == nil && (len(s) == 0 || len(s) > 255 || bytes.ContainsAny([]byte(s), "/?#@ ")) {
			t.Fatalf("accepted %q", s)
		}
	})
}

// FuzzRequest reads what a peer sends: one JSON line, bounded.
func FuzzRequest(f *testing.F) {
	f.Add([]byte(`{"op":"get","registry":"docker.io","repo":"library/debian","digest":"sha256:` + "0000000000000000000000000000000000000000000000000000000000000000" + `","offset":5}` + "\n"))
	f.Add([]byte("{\n"))
	f.Add(bytes.Repeat([]byte("a"), maxRequest+10))
	f.Fuzz(func(t *testing.T, data []byte) {
		var req request
		if err := readLine(bufio.NewReaderSize(bytes.NewReader(data), maxRequest), maxRequest, &req); err != nil {
			return
		}
		if req.Digest != "" {
			_ = req.Digest.Validate()
		}
		_ = ParseNamespace(req.Registry)
	})
}

func FuzzParseTagged(f *testing.F) {
	for _, s := range []string{"debian:12", "docker.io/library/debian:12", "127.0.0.1:5000/team/app:v1", "ghcr.io/o/a@sha256:00", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, tag, err := ParseTagged(s)
		if err == nil && (tag == "" || r.Repo == "" || ParseNamespace(r.Registry) != nil) {
			t.Fatalf("%q: %+v %q", s, r, tag)
		}
	})
}
