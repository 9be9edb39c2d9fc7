package registry

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/shoal-ipfs/shoal/internal/testnode"
)

// pushBlob uploads data to repository name in one request.
func pushBlob(t *testing.T, host, name string, data []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(data)
	res := do(t, http.MethodPost, "http://"+host+"/v2/"+name+"/blobs/uploads/?digest="+d.String(), bytes.NewReader(data))
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("upload of %d bytes: %d", len(data), res.StatusCode)
	}
	return d
}

// TestRangesEndingPastAnyBlob: a range whose last byte is the largest
// int64 is the rest of the blob, not an overflow.
func TestRangesEndingPastAnyBlob(t *testing.T) {
	n := testnode.Offline(t, t.TempDir())
	defer n.Close()
	host, _ := serve(t, n)
	data := []byte("0123456789")
	d := pushBlob(t, host, "app", data)
	for _, c := range []struct {
		rng  string
		want string
	}{
		{"bytes=0-9223372036854775807", "0123456789"},
		{"bytes=1-9223372036854775807", "123456789"},
		{"bytes=9-9223372036854775807", "9"},
		{"bytes=-9223372036854775807", "0123456789"},
	} {
		res := do(t, http.MethodGet, "http://"+host+"/v2/app/blobs/"+d.String(), nil, "Range", c.rng)
		got, err := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusPartialContent || err != nil || string(got) != c.want {
			t.Errorf("%s: %d, %q (%v), want 206 %q", c.rng, res.StatusCode, got, err, c.want)
			continue
		}
		want := fmt.Sprintf("bytes %d-9/10", 10-len(c.want))
		if res.ContentLength != int64(len(c.want)) || res.Header.Get("Content-Range") != want {
			t.Errorf("%s: Content-Length %d, Content-Range %q, want %d, %q", c.rng, res.ContentLength, res.Header.Get("Content-Range"), len(c.want), want)
		}
	}
}
