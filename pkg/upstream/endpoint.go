// Package upstream is a client of one OCI distribution registry: the
// upstream that shoal's mirror pulls through (package mirror).
//
// Auth follows the registries' own flow. A request goes out with what
// worked for the host before; on 401 the WWW-Authenticate challenge says
// how: Bearer (Docker Hub, ghcr.io, most registries) sends the client to
// the realm for a token scoped to the repository, with Basic credentials
// when there are any, anonymous otherwise; Basic (distribution with
// htpasswd) wants the credentials on every request. The credentials are
// the mirror client's own (its Authorization header, forwarded) when it
// sent any, else the endpoint's configured ones. Tokens are cached per
// credentials and scope until shortly before they expire.
package upstream

import (
	"fmt"
	"net/url"
	"strings"
)

// Endpoint names an upstream registry.
type Endpoint struct {
	// Registry is the name clients use: "docker.io", "ghcr.io",
	// "127.0.0.1:5000"; "*" stands for any registry (see ForRegistry).
	Registry string
	// URL is where it is reached, scheme included; "" means
	// https://Registry, and for docker.io https://registry-1.docker.io.
	URL string
	// Username and Password are configured credentials, optional.
	Username, Password string
}

// dockerHub is where docker.io's API lives.
const dockerHub = "https://registry-1.docker.io"

// ParseMirror reads a --mirror value: "REGISTRY", "REGISTRY=URL" (URL
// http:// or https://, no path) or "*".
func ParseMirror(spec string) (Endpoint, error) {
	name, rawURL, hasURL := strings.Cut(spec, "=")
	if name == "" || strings.ContainsAny(name, "/ \t@?#") {
		return Endpoint{}, fmt.Errorf("mirror %q: want REGISTRY or REGISTRY=URL, a registry as image references name it (docker.io, ghcr.io, HOST:PORT) or *", spec)
	}
	if !hasURL {
		return Endpoint{Registry: name}, nil
	}
	if name == "*" {
		return Endpoint{}, fmt.Errorf("mirror %q: * mirrors every registry at its own address, it takes no URL", spec)
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return Endpoint{}, fmt.Errorf("mirror %q: URL %q: want http://HOST[:PORT] or https://HOST[:PORT]", spec, rawURL)
	}
	return Endpoint{Registry: name, URL: u.Scheme + "://" + u.Host}, nil
}

// ForRegistry is the endpoint of registry name under a wildcard endpoint
// ("*": https://name), or ep itself. The wildcard's credentials stay
// behind: one password sent to every registry would be everyone's.
func (ep Endpoint) ForRegistry(name string) Endpoint {
	if ep.Registry != "*" {
		return ep
	}
	return Endpoint{Registry: name}
}

// BaseURL is the endpoint's URL with defaults applied.
func (ep Endpoint) BaseURL() string {
	switch {
	case ep.URL != "":
		return strings.TrimSuffix(ep.URL, "/")
	case ep.Registry == "docker.io":
		return dockerHub
	default:
		return "https://" + ep.Registry
	}
}
