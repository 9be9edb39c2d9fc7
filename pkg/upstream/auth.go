package upstream

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
)

// credentials are what a request authenticates with.
type credentials struct {
	user, password string
	// bearer is a token a client forwarded, sent as is.
	bearer string
}

func (c credentials) none() bool { return c.user == "" && c.bearer == "" }

// id names the credentials in the token cache without holding them.
func (c credentials) id() [sha256.Size]byte {
	return sha256.Sum256([]byte(c.user + "\x00" + c.password + "\x00" + c.bearer))
}

// credentialsFor are a forwarded Authorization header's credentials, else
// the endpoint's configured ones.
func (c *Client) credentialsFor(auth string) credentials {
	scheme, value, _ := strings.Cut(strings.TrimSpace(auth), " ")
	switch {
	case strings.EqualFold(scheme, "basic"):
		if raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(value)); err == nil {
			if u, p, ok := strings.Cut(string(raw), ":"); ok {
				return credentials{user: u, password: p}
			}
		}
	case strings.EqualFold(scheme, "bearer") && value != "":
		return credentials{bearer: strings.TrimSpace(value)}
	}
	return credentials{user: c.ep.Username, password: c.ep.Password}
}

// do sends a request for repo's path with the registry's auth flow and
// returns a successful response, or an error of the response's kind.
func (c *Client) do(ctx context.Context, method, path, repo, auth string, header http.Header) (*http.Response, error) {
	creds := c.credentialsFor(auth)
	scope := "repository:" + repo + ":pull"
	send := func(authorization string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
		if err != nil {
			return nil, fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
		}
		for k, v := range header {
			req.Header[k] = v
		}
		req.Header.Set("User-Agent", c.userAgent)
		if authorization != "" {
			req.Header.Set("Authorization", authorization)
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return nil, unavailable(ctx, err)
		}
		return resp, nil
	}
	resp, err := send(c.upFront(creds, scope))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusUnauthorized && creds.bearer == "" {
		challenges, perr := ParseChallenge(resp.Header.Get("WWW-Authenticate"))
		if perr == nil {
			authorization, aerr := c.answer(ctx, challenges, creds, scope)
			switch {
			case aerr == nil:
				resp.Body.Close()
				if resp, err = send(authorization); err != nil {
					return nil, err
				}
			case errors.Is(aerr, errNoCredentials):
				// Anonymous and refused: the 401 stands.
			default:
				resp.Body.Close()
				return nil, aerr
			}
		}
	}
	if !ok(resp) {
		defer resp.Body.Close()
		return nil, statusError(resp)
	}
	return resp, nil
}

// upFront is the Authorization sent before any challenge: a forwarded
// token, or what the registry asked for last time.
func (c *Client) upFront(creds credentials, scope string) string {
	if creds.bearer != "" {
		return "Bearer " + creds.bearer
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.scheme {
	case "basic":
		if !creds.none() {
			return basic(creds)
		}
	case "bearer":
		if t, ok := c.tokens.get(creds.id(), scope); ok {
			return "Bearer " + t
		}
	}
	return ""
}

func basic(creds credentials) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(creds.user+":"+creds.password))
}

// answer meets a challenge: a token from the registry's token service, or
// Basic credentials.
func (c *Client) answer(ctx context.Context, challenges []Challenge, creds credentials, scope string) (string, error) {
	for _, ch := range challenges {
		if strings.EqualFold(ch.Scheme, "bearer") && ch.Params["realm"] != "" {
			if s := ch.Params["scope"]; s != "" {
				scope = s
			}
			c.mu.Lock()
			c.scheme = "bearer"
			c.mu.Unlock()
			t, err := c.token(ctx, ch, creds, scope)
			if err != nil {
				return "", err
			}
			return "Bearer " + t, nil
		}
	}
	for _, ch := range challenges {
		if strings.EqualFold(ch.Scheme, "basic") {
			c.mu.Lock()
			c.scheme = "basic"
			c.mu.Unlock()
			if creds.none() {
				return "", errNoCredentials
			}
			return basic(creds), nil
		}
	}
	return "", errNoCredentials
}

// maxTokenResponse bounds a token service's answer.
const maxTokenResponse = 64 << 10

// token gets a token for scope from the challenge's realm.
func (c *Client) token(ctx context.Context, ch Challenge, creds credentials, scope string) (string, error) {
	if t, ok := c.tokens.get(creds.id(), scope); ok {
		return t, nil
	}
	realm, err := url.Parse(ch.Params["realm"])
	if err != nil || (realm.Scheme != "https" && realm.Scheme != "http") || realm.Host == "" {
		return "", fmt.Errorf("token realm %q: %w", ch.Params["realm"], errdefs.ErrUnknown)
	}
	q := realm.Query()
	if s := ch.Params["service"]; s != "" {
		q.Set("service", s)
	}
	q.Set("scope", scope)
	realm.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, realm.String(), nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("User-Agent", c.userAgent)
	if creds.user != "" {
		req.SetBasicAuth(creds.user, creds.password)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("token service: %w", unavailable(ctx, err))
	}
	defer resp.Body.Close()
	if !ok(resp) {
		return "", fmt.Errorf("token service: %w", statusError(resp))
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenResponse+1))
	if err != nil {
		return "", fmt.Errorf("token service: %w", unavailable(ctx, err))
	}
	t, ttl, err := ParseToken(data)
	if err != nil {
		return "", fmt.Errorf("token service: %w", err)
	}
	c.tokens.put(creds.id(), scope, t, ttl)
	return t, nil
}

// ParseToken reads a token service's JSON answer: the token (token, or
// OAuth2's access_token) and how long it lasts (expires_in seconds, 60
// when not said).
func ParseToken(data []byte) (string, time.Duration, error) {
	if len(data) > maxTokenResponse {
		return "", 0, fmt.Errorf("answer larger than %d bytes: %w", maxTokenResponse, errdefs.ErrUnknown)
	}
	var r struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return "", 0, fmt.Errorf("answer: %v: %w", err, errdefs.ErrUnknown)
	}
	t := r.Token
	if t == "" {
		t = r.AccessToken
	}
	if t == "" || strings.ContainsAny(t, "\r\n") {
		return "", 0, fmt.Errorf("answer holds no token: %w", errdefs.ErrUnknown)
	}
	ttl := 60 * time.Second
	if r.ExpiresIn > 0 && r.ExpiresIn < 1<<31 {
		ttl = time.Duration(r.ExpiresIn) * time.Second
	}
	return t, ttl, nil
}

// tokenCache keeps tokens per credentials and scope until shortly before
// they expire, the oldest dropped beyond its bound.
type tokenCache struct {
	mu      sync.Mutex
	max     int
	entries map[tokenKey]tokenEntry
	order   []tokenKey
}

type tokenKey struct {
	creds [sha256.Size]byte
	scope string
}

type tokenEntry struct {
	token   string
	expires time.Time
}

func newTokenCache(max int) tokenCache {
	return tokenCache{max: max, entries: map[tokenKey]tokenEntry{}}
}

func (tc *tokenCache) get(creds [sha256.Size]byte, scope string) (string, bool) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	e, ok := tc.entries[tokenKey{creds, scope}]
	if !ok || time.Now().After(e.expires) {
		return "", false
	}
	return e.token, true
}

func (tc *tokenCache) put(creds [sha256.Size]byte, scope, token string, ttl time.Duration) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	k := tokenKey{creds, scope}
	if _, ok := tc.entries[k]; !ok {
		tc.order = append(tc.order, k)
	}
	// A margin, so that no token expires on its way.
	tc.entries[k] = tokenEntry{token: token, expires: time.Now().Add(ttl - min(10*time.Second, ttl/4))}
	for len(tc.order) > tc.max {
		delete(tc.entries, tc.order[0])
		tc.order = tc.order[1:]
	}
}
