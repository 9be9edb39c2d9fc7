package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/shoal-ipfs/shoal/internal/errkind"
)

// apiError is an error of the distribution spec: a code, an HTTP status and
// a message, sent as {"errors": [...]}.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
	status  int
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

// with returns a copy of e whose message says more.
func (e *apiError) with(format string, args ...any) *apiError {
	c := *e
	c.Message = e.Message + ": " + fmt.Sprintf(format, args...)
	return &c
}

// Is matches any error of the same code, so errors.Is works on copies.
func (e *apiError) Is(target error) bool {
	t, ok := target.(*apiError)
	return ok && t.Code == e.Code
}

var (
	errBlobUnknown         = &apiError{Code: "BLOB_UNKNOWN", Message: "blob unknown to registry", status: http.StatusNotFound}
	errBlobUploadInvalid   = &apiError{Code: "BLOB_UPLOAD_INVALID", Message: "blob upload invalid", status: http.StatusBadRequest}
	errUploadUnknown       = &apiError{Code: "BLOB_UPLOAD_UNKNOWN", Message: "blob upload unknown to registry", status: http.StatusNotFound}
	errDigestInvalid       = &apiError{Code: "DIGEST_INVALID", Message: "provided digest did not match uploaded content", status: http.StatusBadRequest}
	errManifestBlobUnknown = &apiError{Code: "MANIFEST_BLOB_UNKNOWN", Message: "manifest references a manifest or blob unknown to registry", status: http.StatusBadRequest}
	errManifestInvalid     = &apiError{Code: "MANIFEST_INVALID", Message: "manifest invalid", status: http.StatusBadRequest}
	errManifestUnknown     = &apiError{Code: "MANIFEST_UNKNOWN", Message: "manifest unknown to registry", status: http.StatusNotFound}
	errNameInvalid         = &apiError{Code: "NAME_INVALID", Message: "invalid repository name", status: http.StatusBadRequest}
	errNameUnknown         = &apiError{Code: "NAME_UNKNOWN", Message: "repository name not known to registry", status: http.StatusNotFound}
	errTooLarge            = &apiError{Code: "SIZE_INVALID", Message: "content too large", status: http.StatusRequestEntityTooLarge}
	errUnauthorized        = &apiError{Code: "UNAUTHORIZED", Message: "authentication required", status: http.StatusUnauthorized}
	errDenied              = &apiError{Code: "DENIED", Message: "requested access to the resource is denied", status: http.StatusForbidden}
	errUnsupported         = &apiError{Code: "UNSUPPORTED", Message: "the operation is unsupported", status: http.StatusMethodNotAllowed}
	errRangeInvalid        = &apiError{Code: "BLOB_UPLOAD_INVALID", Message: "range not satisfiable", status: http.StatusRequestedRangeNotSatisfiable}
	errNotFound            = &apiError{Code: "NOT_FOUND", Message: "no such route", status: http.StatusNotFound}
	errTooManyRequests     = &apiError{Code: "TOOMANYREQUESTS", Message: "too many requests", status: http.StatusTooManyRequests}
)

// writeError sends err as the spec's error body; an error of no API code
// is UNKNOWN, with the status of its kind (errkind): a store that is
// unavailable is 503, a fetch that timed out 504, anything else 500.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		ae = &apiError{Code: "UNKNOWN", Message: err.Error(), status: errkind.HTTPStatus(err)}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Content-Length")
	w.Header().Del("Docker-Content-Digest")
	if ae.status == http.StatusTooManyRequests || ae.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", retryAfter)
	}
	w.WriteHeader(ae.status)
	if r.Method == http.MethodHead {
		return
	}
	_ = json.NewEncoder(w).Encode(map[string][]*apiError{"errors": {ae}})
}
