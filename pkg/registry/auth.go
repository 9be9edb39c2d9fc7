package registry

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// auth checks HTTP basic credentials against htpasswd entries (bcrypt, as
// `htpasswd -B` writes them, and as distribution reads them).
type auth struct {
	users map[string][]byte // user → bcrypt hash
	pulls bool              // pulls need credentials too
	// bcrypt is slow by design; credentials that checked out once are
	// remembered by their sha256, so a pull of many blobs pays once.
	mu   sync.Mutex
	good map[[32]byte]bool
}

// WithBasicAuth makes pushes (and, with pulls, every request) need one of
// users' credentials.
func WithBasicAuth(users map[string][]byte, pulls bool) Option {
	return func(r *Registry) { r.auth = &auth{users: users, pulls: pulls, good: map[[32]byte]bool{}} }
}

// LoadHtpasswd reads an htpasswd file of bcrypt entries.
func LoadHtpasswd(path string) (map[string][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("htpasswd: %w", err)
	}
	defer f.Close()
	users := map[string][]byte{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		user, hash, ok := strings.Cut(text, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("htpasswd %s:%d: want user:hash", path, line)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("htpasswd %s:%d: user %s: only bcrypt entries (htpasswd -B) are accepted: %v", path, line, user, err)
		}
		users[user] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("htpasswd %s: %w", path, err)
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("htpasswd %s: no users", path)
	}
	return users, nil
}

// challenge answers a request that needs credentials.
const challenge = `Basic realm="shoal registry"`

// RequireCredentials serves h only to requests that carry a registry
// user's credentials, whether or not pulls need them; a registry with no
// users serves it to no one.
func (rg *Registry) RequireCredentials(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, given := r.BasicAuth()
		if rg.auth == nil || !given || !rg.auth.valid(user, pass) {
			w.Header().Set("WWW-Authenticate", challenge)
			http.Error(w, "authentication required: a registry user's credentials", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// check returns nil when r may go ahead: it carries valid credentials, or
// it needs none and carries none.
func (a *auth) check(r *http.Request) error {
	user, pass, given := r.BasicAuth()
	write := r.Method != http.MethodGet && r.Method != http.MethodHead
	if !given {
		if write || a.pulls {
			return errUnauthorized
		}
		return nil
	}
	if a.valid(user, pass) {
		return nil
	}
	return errUnauthorized.with("wrong user name or password")
}

func (a *auth) valid(user, pass string) bool {
	hash, ok := a.users[user]
	if !ok {
		// Compare anyway, so that unknown users take as long as known ones.
		_ = bcrypt.CompareHashAndPassword([]byte("$2a$10$invalidinvalidinvalidinvalidinvalidinvalidinvalidinva"), []byte(pass))
		return false
	}
	key := sha256.Sum256([]byte(user + "\x00" + pass + "\x00" + string(hash)))
	a.mu.Lock()
	known := a.good[key]
	a.mu.Unlock()
	if known {
		return true
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(pass)) != nil {
		return false
	}
	a.mu.Lock()
	if len(a.good) > 4096 {
		clear(a.good)
	}
	a.good[key] = true
	a.mu.Unlock()
	return true
}
