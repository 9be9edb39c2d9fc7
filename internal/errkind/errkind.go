// Package errkind is shoal's one vocabulary of error kinds: containerd's
// errdefs (not found, invalid argument, already exists, unavailable, data
// loss, …) and the context's deadline and cancellation. Every package's
// sentinel errors are of one of these kinds (errors.Is holds for both the
// sentinel and its kind), and every boundary derives what it sends from
// the kind: the daemon's socket carries it by name, containerd's gRPC
// maps it to a code (errgrpc, in containerd's own servers), and the HTTP
// status of the registry and of the socket is HTTPStatus.
package errkind

import (
	"context"
	"errors"
	"net/http"

	"github.com/containerd/errdefs"
)

// kinds are the kinds, the most specific first.
var kinds = []error{
	errdefs.ErrNotFound,
	errdefs.ErrInvalidArgument,
	errdefs.ErrAlreadyExists,
	errdefs.ErrConflict,
	errdefs.ErrFailedPrecondition,
	errdefs.ErrUnavailable,
	errdefs.ErrDataLoss,
	errdefs.ErrOutOfRange,
	errdefs.ErrNotImplemented,
	errdefs.ErrPermissionDenied,
	errdefs.ErrUnauthenticated,
	errdefs.ErrResourceExhausted,
	context.DeadlineExceeded,
	context.Canceled,
}

// Of returns err's kind, or nil if it has none.
func Of(err error) error {
	for _, k := range kinds {
		if errors.Is(err, k) {
			return k
		}
	}
	return nil
}

// Name is the name of err's kind on the wire ("not found"), "" if it has
// none.
func Name(err error) string {
	if k := Of(err); k != nil {
		return k.Error()
	}
	return ""
}

// Parse returns the kind that Name gave name, or nil.
func Parse(name string) error {
	for _, k := range kinds {
		if k.Error() == name {
			return k
		}
	}
	return nil
}

// New returns an error whose message is msg and whose kind is kind: a
// package's sentinel in its own words, or an error received from
// elsewhere with its kind restored.
func New(msg string, kind error) error { return &kindError{msg: msg, kind: kind} }

type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

// HTTPStatus is the status of a response that fails with err.
func HTTPStatus(err error) int {
	switch Of(err) {
	case errdefs.ErrNotFound:
		return http.StatusNotFound
	case errdefs.ErrInvalidArgument:
		return http.StatusBadRequest
	case errdefs.ErrAlreadyExists, errdefs.ErrConflict:
		return http.StatusConflict
	case errdefs.ErrFailedPrecondition:
		return http.StatusPreconditionFailed
	case errdefs.ErrUnavailable:
		return http.StatusServiceUnavailable
	case errdefs.ErrOutOfRange:
		return http.StatusRequestedRangeNotSatisfiable
	case errdefs.ErrNotImplemented:
		return http.StatusNotImplemented
	case errdefs.ErrPermissionDenied:
		return http.StatusForbidden
	case errdefs.ErrUnauthenticated:
		return http.StatusUnauthorized
	case errdefs.ErrResourceExhausted:
		return http.StatusTooManyRequests
	case context.DeadlineExceeded:
		return http.StatusGatewayTimeout
	default:
		return http.StatusInternalServerError
	}
}

// Exit codes of shoal's commands, by kind, so that a script can tell a
// missing image from a registry that is down without reading messages.
const (
	ExitFailure     = 1   // no more specific kind
	ExitUsage       = 2   // the command line, or an argument, is wrong
	ExitNotFound    = 3   // no such image, blob, CID, tag or file
	ExitUnavailable = 4   // offline, no peer, a daemon or registry unreachable, the store in use
	ExitTimeout     = 5   // nothing arrived in time
	ExitDataLoss    = 6   // bytes that do not match their digest or CID
	ExitDenied      = 7   // credentials missing or refused
	ExitConflict    = 8   // already exists, or the state does not allow it
	ExitCanceled    = 130 // interrupted (128 + SIGINT, as shells report it)
)

// ExitCode is the exit code of a command that fails with err.
func ExitCode(err error) int {
	switch Of(err) {
	case errdefs.ErrInvalidArgument, errdefs.ErrOutOfRange:
		return ExitUsage
	case errdefs.ErrNotFound:
		return ExitNotFound
	case errdefs.ErrUnavailable, errdefs.ErrResourceExhausted:
		return ExitUnavailable
	case context.DeadlineExceeded:
		return ExitTimeout
	case errdefs.ErrDataLoss:
		return ExitDataLoss
	case errdefs.ErrPermissionDenied, errdefs.ErrUnauthenticated:
		return ExitDenied
	case errdefs.ErrAlreadyExists, errdefs.ErrConflict, errdefs.ErrFailedPrecondition:
		return ExitConflict
	case context.Canceled:
		return ExitCanceled
	default:
		return ExitFailure
	}
}
