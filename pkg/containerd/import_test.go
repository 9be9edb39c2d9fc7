package containerd

import "testing"

func TestNormalizeRefNamesImagesAsContainerdDoes(t *testing.T) {
	for in, want := range map[string]string{
		"debian":                        "docker.io/library/debian:latest",
		"debian:12":                     "docker.io/library/debian:12",
		"127.0.0.1:5050/ipfs/bafy:v1":   "127.0.0.1:5050/ipfs/bafy:v1",
		"shoal.test/app":                "shoal.test/app:latest",
		"ghcr.io/o/app@sha256:" + hex64: "ghcr.io/o/app@sha256:" + hex64,
	} {
		if got, err := NormalizeRef(in); err != nil || got != want {
			t.Errorf("NormalizeRef(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "library/UPPER", "a b", "x:"} {
		if got, err := NormalizeRef(bad); err == nil {
			t.Errorf("NormalizeRef(%q) = %q, want an error", bad, got)
		}
	}
}

const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func FuzzNormalizeRef(f *testing.F) {
	f.Add("debian:12")
	f.Add("127.0.0.1:5050/ipfs/bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
	f.Fuzz(func(t *testing.T, ref string) {
		name, err := NormalizeRef(ref)
		if err != nil {
			return
		}
		if again, err := NormalizeRef(name); err != nil || again != name {
			t.Fatalf("%q normalizes to %q, which normalizes to %q (%v)", ref, name, again, err)
		}
	})
}

func TestOptionsTakeCtrsVariables(t *testing.T) {
	t.Setenv("CONTAINERD_ADDRESS", "/run/other.sock")
	t.Setenv("CONTAINERD_NAMESPACE", "k8s.io")
	o := Options{}
	o.defaults()
	if o.Address != "/run/other.sock" || o.Namespace != "k8s.io" || o.Snapshotter != DefaultSnapshotter {
		t.Errorf("from the environment: %+v", o)
	}
	o = Options{Address: "/a.sock", Namespace: "ns", Snapshotter: "s"}
	o.defaults()
	if o.Address != "/a.sock" || o.Namespace != "ns" || o.Snapshotter != "s" {
		t.Errorf("flags lost to the environment: %+v", o)
	}
	t.Setenv("CONTAINERD_ADDRESS", "")
	t.Setenv("CONTAINERD_NAMESPACE", "")
	o = Options{}
	o.defaults()
	if o.Address != DefaultAddress || o.Namespace != DefaultNamespace {
		t.Errorf("defaults: %+v", o)
	}
}
