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

// TestEveryKindHasOneExitCode: each kind maps to an exit code, kinds that
// mean the same to a script share one, and an error of no kind is a
// plain failure.
func TestEveryKindHasOneExitCode(t *testing.T) {
	want := map[error]int{
		errdefs.ErrNotFound: ExitNotFound, errdefs.ErrInvalidArgument: ExitUsage, errdefs.ErrOutOfRange: ExitUsage,
		errdefs.ErrAlreadyExists: ExitConflict, errdefs.ErrConflict: ExitConflict, errdefs.ErrFailedPrecondition: ExitConflict,
		errdefs.ErrUnavailable: ExitUnavailable, errdefs.ErrResourceExhausted: ExitUnavailable, errdefs.ErrDataLoss: ExitDataLoss,
		errdefs.ErrNotImplemented: ExitFailure, errdefs.ErrPermissionDenied: ExitDenied, errdefs.ErrUnauthenticated: ExitDenied,
		context.DeadlineExceeded: ExitTimeout, context.Canceled: ExitCanceled,
	}
	for _, k := range kinds {
		code, ok := want[k]
		if !ok {
			t.Errorf("kind %v has no exit code in this test", k)
		}
		// Wrapped, and carried across the daemon's socket by name.
		if got := ExitCode(New("x: "+k.Error(), Parse(Name(fmt.Errorf("x: %w", k))))); got != code {
			t.Errorf("%v: exit %d, want %d", k, got, code)
		}
	}
	if ExitCode(errors.New("plain")) != ExitFailure {
		t.Error("an error of no kind is not a plain failure")
	}
}
