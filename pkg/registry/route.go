package registry

import (
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"
)

// kind is what a /v2/ path addresses.
type kind int

const (
	kindBase      kind = iota // /v2/
	kindCatalog               // /v2/_catalog
	kindManifest              // /v2/NAME/manifests/REF
	kindBlob                  // /v2/NAME/blobs/DIGEST
	kindUploads               // /v2/NAME/blobs/uploads/
	kindUpload                // /v2/NAME/blobs/uploads/ID
	kindTags                  // /v2/NAME/tags/list
	kindReferrers             // /v2/NAME/referrers/DIGEST
)

// route is a parsed request path.
type route struct {
	kind kind
	name string // repository
	ref  string // tag, digest or upload ID
}

// Limits and grammar of the distribution spec.
var (
	nameRE = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRE  = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
	idRE   = regexp.MustCompile(`^[a-f0-9]{32}$`)
)

const maxNameLen = 255

// parseRoute parses the path of a registry request. Errors are the
// distribution spec's: NAME_INVALID, DIGEST_INVALID, MANIFEST_INVALID or
// NOT_FOUND for a path that is no route at all.
func parseRoute(path string) (route, error) {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		if path == "/v2" {
			return route{kind: kindBase}, nil
		}
		return route{}, errNotFound
	}
	switch rest {
	case "":
		return route{kind: kindBase}, nil
	case "_catalog":
		return route{kind: kindCatalog}, nil
	}
	// The name may hold slashes; the last known marker ends it.
	var r route
	switch {
	case strings.HasSuffix(rest, "/tags/list"):
		r = route{kind: kindTags, name: strings.TrimSuffix(rest, "/tags/list")}
	case strings.HasSuffix(rest, "/blobs/uploads/") || strings.HasSuffix(rest, "/blobs/uploads"):
		r = route{kind: kindUploads, name: rest[:strings.LastIndex(rest, "/blobs/uploads")]}
	default:
		i := strings.LastIndex(rest, "/")
		if i < 0 {
			return route{}, errNotFound
		}
		head, ref := rest[:i], rest[i+1:]
		j := strings.LastIndex(head, "/")
		if j < 0 {
			return route{}, errNotFound
		}
		name, marker := head[:j], head[j+1:]
		switch marker {
		case "manifests":
			r = route{kind: kindManifest, name: name, ref: ref}
		case "blobs":
			r = route{kind: kindBlob, name: name, ref: ref}
		case "referrers":
			r = route{kind: kindReferrers, name: name, ref: ref}
		case "uploads":
			n, ok := strings.CutSuffix(name, "/blobs")
			if !ok {
				return route{}, errNotFound
			}
			r = route{kind: kindUpload, name: n, ref: ref}
		default:
			return route{}, errNotFound
		}
	}
	if err := checkName(r.name); err != nil {
		return r, err
	}
	switch r.kind {
	case kindManifest:
		if !tagRE.MatchString(r.ref) {
			if _, err := parseDigest(r.ref); err != nil {
				return r, errManifestInvalid.with("reference %q is neither a tag nor a digest", r.ref)
			}
		}
	case kindBlob, kindReferrers:
		if _, err := parseDigest(r.ref); err != nil {
			return r, err
		}
	case kindUpload:
		if !idRE.MatchString(r.ref) {
			return r, errUploadUnknown.with("upload %q", r.ref)
		}
	}
	return r, nil
}

func checkName(name string) error {
	if len(name) > maxNameLen || !nameRE.MatchString(name) {
		return errNameInvalid.with("repository name %q", name)
	}
	return nil
}

// parseDigest accepts the algorithms this registry can verify.
func parseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", errDigestInvalid.with("digest %q: %v", s, err)
	}
	if !d.Algorithm().Available() {
		return "", errDigestInvalid.with("digest %q: algorithm %s is not supported", s, d.Algorithm())
	}
	return d, nil
}

func isDigest(ref string) bool { return strings.Contains(ref, ":") }
