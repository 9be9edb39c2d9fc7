package errkind

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/containerd/errdefs"
)

func TestEveryKindCrossesByName(t *testing.T) {
	for _, k := range kinds {
		sent := fmt.Errorf("a blob: %w", k)
		got := New(sent.Error(), Parse(Name(sent)))
		if !errors.Is(got, k) || got.Error() != sent.Error() {
			t.Errorf("%v arrived as %v (kind %v)", sent, got, Of(got))
		}
	}
	if Of(errors.New("plain")) != nil || Name(errors.New("plain")) != "" || Parse("nonsense") != nil {
		t.Error("an error of no kind has a kind")
	}
}

func TestSentinelsKeepTheirWordsAndKind(t *testing.T) {
	sentinel := New("node is offline", errdefs.ErrUnavailable)
	err := fmt.Errorf("fetch: %w", sentinel)
	if !errors.Is(err, sentinel) || !errdefs.IsUnavailable(err) || err.Error() != "fetch: node is offline" {
		t.Fatalf("%v", err)
	}
	if HTTPStatus(err) != http.StatusServiceUnavailable || HTTPStatus(fmt.Errorf("x: %w", context.DeadlineExceeded)) != http.StatusGatewayTimeout {
		t.Fatal("statuses")
	}
}
