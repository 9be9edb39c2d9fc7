package registry

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/shoal-ipfs/shoal/pkg/image"
)

// An error of no API code answers with the status of its kind.
func TestErrorsOfAKindGetItsStatus(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{fmt.Errorf("store: %w", errdefs.ErrUnavailable), http.StatusServiceUnavailable},
		{fmt.Errorf("fetch: %w", image.ErrTimeout), http.StatusGatewayTimeout},
		{fmt.Errorf("blob: %w", errdefs.ErrNotFound), http.StatusNotFound},
		{fmt.Errorf("no kind"), http.StatusInternalServerError},
		{errBlobUnknown, http.StatusNotFound},
	} {
		rec := httptest.NewRecorder()
		writeError(rec, httptest.NewRequest(http.MethodGet, "/v2/", nil), c.err)
		if rec.Code != c.want {
			t.Errorf("%v: %d, want %d", c.err, rec.Code, c.want)
		}
		if c.want == http.StatusServiceUnavailable && rec.Header().Get("Retry-After") == "" {
			t.Errorf("%v: no Retry-After", c.err)
		}
	}
}
