package kubo

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Auto is the --ipfs-api value that finds the API as nerdctl and the ipfs
// command do: the multiaddr in $IPFS_PATH/api (default ~/.ipfs/api).
const Auto = "auto"

// Address is where a kubo daemon serves its RPC API.
type Address struct {
	// Multiaddr is the address as given, e.g. /ip4/127.0.0.1/tcp/5001 or
	// /unix/run/ipfs.sock.
	Multiaddr string
	// From names the api file the address was read from, if any.
	From string

	network, dial string // what net.Dial takes: tcp4 host:port, unix path
	scheme        string // http or https
}

func (a Address) String() string {
	if a.From != "" {
		return a.Multiaddr + " (from " + a.From + ")"
	}
	return a.Multiaddr
}

// ParseAddress parses an API multiaddr: /ip4, /ip6 or /dns* with /tcp, or
// /unix, optionally ending in /http, /https or /tls/http.
func ParseAddress(s string) (Address, error) {
	s = strings.TrimSpace(s)
	m, err := ma.NewMultiaddr(s)
	if err != nil {
		return Address{}, fmt.Errorf("kubo API address %q: %w (want a multiaddr such as /ip4/127.0.0.1/tcp/5001)", s, err)
	}
	scheme := "http"
	for len(m) > 1 {
		code := m[len(m)-1].Protocol().Code
		if code != ma.P_HTTP && code != ma.P_HTTPS && code != ma.P_TLS {
			break
		}
		if code != ma.P_HTTP {
			scheme = "https"
		}
		m = m[:len(m)-1]
	}
	network, dial, err := manet.DialArgs(m)
	if err == nil && !strings.HasPrefix(network, "tcp") && network != "unix" {
		err = fmt.Errorf("network %s", network)
	}
	if err != nil {
		return Address{}, fmt.Errorf("kubo API address %q: %w (want TCP or a unix socket, as /ip4/127.0.0.1/tcp/5001 or /unix/PATH)", s, err)
	}
	if network == "unix" && scheme == "https" {
		return Address{}, fmt.Errorf("kubo API address %q: TLS over a unix socket is not supported", s)
	}
	return Address{Multiaddr: s, network: network, dial: dial, scheme: scheme}, nil
}

// Repo is the kubo repository $IPFS_PATH names, ~/.ipfs by default.
func Repo() string {
	if p := os.Getenv("IPFS_PATH"); p != "" {
		if rest, ok := strings.CutPrefix(p, "~/"); ok {
			if home, err := os.UserHomeDir(); err == nil {
				return filepath.Join(home, rest)
			}
		}
		return p
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ".ipfs"
	}
	return filepath.Join(home, ".ipfs")
}

// ResolveAddress turns a --ipfs-api value into an address: a multiaddr
// as it is, Auto (or "") the one in the running kubo's api file.
func ResolveAddress(value string) (Address, error) {
	if value != "" && value != Auto {
		return ParseAddress(value)
	}
	file := filepath.Join(Repo(), "api")
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return Address{}, fmt.Errorf("no kubo API file at %s: kubo writes it while `ipfs daemon` runs; start the daemon, set IPFS_PATH to its repository, or give --ipfs-api MULTIADDR", file)
	}
	if err != nil {
		return Address{}, fmt.Errorf("kubo API file: %w", err)
	}
	a, err := ParseAddress(string(data))
	if err != nil {
		return Address{}, fmt.Errorf("%s: %w", file, err)
	}
	a.From = file
	return a, nil
}
