package mirror

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"

	"github.com/distribution/reference"
)

// hostRE is a registry's host name as image references spell it.
var hostRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*$`)

// ParseNamespace checks a mirror request's ns parameter: the registry a
// client meant, HOST or HOST:PORT as image references name it (an IPv6
// address in brackets).
func ParseNamespace(ns string) error {
	if ns == "" || len(ns) > 255 {
		return fmt.Errorf("registry %q: want HOST[:PORT]", ns)
	}
	host, port := ns, ""
	if strings.HasPrefix(ns, "[") {
		h, p, err := net.SplitHostPort(ns)
		if err != nil && strings.HasSuffix(ns, "]") {
			h, err = ns[1:len(ns)-1], nil
		}
		if err != nil || net.ParseIP(h) == nil || !strings.Contains(h, ":") {
			return fmt.Errorf("registry %q: want HOST[:PORT]", ns)
		}
		host, port = "", p
	} else if i := strings.LastIndexByte(ns, ':'); i >= 0 {
		host, port = ns[:i], ns[i+1:]
		if port == "" {
			return fmt.Errorf("registry %q: empty port", ns)
		}
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 || port[0] == '0' {
			return fmt.Errorf("registry %q: port %q", ns, port)
		}
	}
	if host != "" && !hostRE.MatchString(host) {
		return fmt.Errorf("registry %q: want HOST[:PORT]", ns)
	}
	return nil
}

// ParseTagged reads REGISTRY/REPOSITORY:TAG as image references spell it,
// with Docker's shorthands (debian:12 is docker.io/library/debian:12).
func ParseTagged(s string) (Ref, string, error) {
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return Ref{}, "", fmt.Errorf("image %q: %w", s, err)
	}
	tagged, ok := named.(reference.Tagged)
	if !ok {
		return Ref{}, "", fmt.Errorf("image %q: want REGISTRY/REPOSITORY:TAG", s)
	}
	if _, digested := named.(reference.Digested); digested {
		return Ref{}, "", fmt.Errorf("image %q: a digest names no tag to forget", s)
	}
	if err := ParseNamespace(reference.Domain(named)); err != nil {
		return Ref{}, "", err
	}
	return Ref{Registry: reference.Domain(named), Repo: reference.Path(named)}, tagged.Tag(), nil
}
