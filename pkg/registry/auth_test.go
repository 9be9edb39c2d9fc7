package registry

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/shoal-ipfs/shoal/internal/testimage"
	"github.com/shoal-ipfs/shoal/pkg/store/memstore"
	"golang.org/x/crypto/bcrypt"
)

func htpasswd(t *testing.T, user, pass string) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(p, []byte("# registry users\n"+user+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPushNeedsCredentialsAndPullsCanToo: with an htpasswd file, pushes
// need a user's credentials; pulls need them only when asked for.
func TestPushNeedsCredentialsAndPullsCanToo(t *testing.T) {
	users, err := LoadHtpasswd(htpasswd(t, "ci", "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	img, _ := testimage.Image(9, testimage.Platforms[0], 3000)
	good := remote.WithAuth(&authn.Basic{Username: "ci", Password: "s3cret"})
	bad := remote.WithAuth(&authn.Basic{Username: "ci", Password: "guess"})
	for _, pulls := range []bool{false, true} {
		n := memstore.New()
		host, _ := serve(t, n, WithBasicAuth(users, pulls))
		if err := remote.Write(ref(t, host+"/app:1"), img); err == nil {
			t.Error("anonymous push accepted")
		}
		if err := remote.Write(ref(t, host+"/app:1"), img, bad); err == nil {
			t.Error("push with a wrong password accepted")
		}
		if err := remote.Write(ref(t, host+"/app:1"), img, good); err != nil {
			t.Fatalf("push with credentials: %v", err)
		}
		if _, err := remote.Image(ref(t, host+"/app:1")); (err == nil) == pulls {
			t.Errorf("anonymous pull with pull auth %v: %v", pulls, err)
		}
		if _, err := remote.Image(ref(t, host+"/app:1"), good); err != nil {
			t.Errorf("pull with credentials: %v", err)
		}
		res := do(t, http.MethodPut, "http://"+host+"/v2/app/manifests/2", nil)
		if res.StatusCode != 401 || res.Header.Get("WWW-Authenticate") == "" || errorCode(t, res) != "UNAUTHORIZED" {
			t.Errorf("anonymous manifest PUT: %d, challenge %q", res.StatusCode, res.Header.Get("WWW-Authenticate"))
		}
	}
}

func TestLoadHtpasswdTakesOnlyBcrypt(t *testing.T) {
	p := filepath.Join(t.TempDir(), "htpasswd")
	os.WriteFile(p, []byte("old:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n"), 0o600)
	if _, err := LoadHtpasswd(p); err == nil {
		t.Error("a SHA-1 entry was accepted")
	}
	os.WriteFile(p, []byte("\n# nobody\n"), 0o600)
	if _, err := LoadHtpasswd(p); err == nil {
		t.Error("a file without users was accepted")
	}
}
