package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"github.com/shoal-ipfs/shoal/pkg/blob"
)

// Config is $SHOAL_HOME/config.toml.
type Config struct {
	Swarm      SwarmConfig      `toml:"swarm"`
	Datastore  DatastoreConfig  `toml:"datastore"`
	Import     ImportConfig     `toml:"import"`
	Daemon     DaemonConfig     `toml:"daemon"`
	Registry   RegistryConfig   `toml:"registry"`
	Containerd ContainerdConfig `toml:"containerd"`
	Group      GroupConfig      `toml:"group"`
	Mount      MountConfig      `toml:"mount"`
	// Mirror are the registries the daemon's registry mirrors ([[mirror]]).
	Mirror []MirrorConfig `toml:"mirror"`
}

// MirrorConfig is a registry that `shoal daemon` mirrors: containerd's
// requests for it (hosts.toml) are answered from the node, its peers, or
// the registry itself (package mirror).
type MirrorConfig struct {
	// Registry is the name in image references ("docker.io",
	// "ghcr.io", "127.0.0.1:5000"), or "*" for any registry over HTTPS.
	Registry string `toml:"registry"`
	// URL is where the registry is reached, when not https://REGISTRY.
	URL string `toml:"url"`
	// Username and PasswordFile are credentials for the registry; the
	// file (relative paths under $SHOAL_HOME) must be its owner's only.
	Username     string `toml:"username"`
	PasswordFile string `toml:"password-file"`
}

// SwarmConfig is the libp2p side of the node.
type SwarmConfig struct {
	// Listen are the swarm addresses of `shoal daemon`. Port 0 picks a free port.
	Listen []string `toml:"listen"`
	// Peers are multiaddrs (with /p2p/ID) that every online command
	// connects to and that the daemon keeps connected.
	Peers []string `toml:"peers"`
	// MDNS finds peers on the local network.
	MDNS bool `toml:"mdns"`
	// Key is a swarm key file (kubo's swarm.key format; relative paths
	// are under $SHOAL_HOME). When the file exists, the node is in the
	// private network of the key's holders, over TCP only.
	Key string `toml:"key"`
	// Allow lists the only peer IDs that may connect; empty allows all.
	Allow []string `toml:"allow"`
	// DHT is "lan" (kubo's LAN DHT: private and loopback addresses),
	// "wan" (the Amino protocol over the configured peers) or "off".
	DHT string `toml:"dht"`
}

// DatastoreConfig chooses where blocks live.
type DatastoreConfig struct {
	// Blocks is "flatfs" (one file per block) or "pebble".
	Blocks string `toml:"blocks"`
	// Sync makes every block write durable before it is acknowledged.
	Sync bool `toml:"sync"`
}

// ImportConfig decides the UnixFS layout of new blobs.
type ImportConfig struct {
	// Layout is "kubo" (256 KiB chunks, 174 links) or "unixfs-v1-2025" (1 MiB, 1024).
	Layout string `toml:"layout"`
}

// DaemonConfig is how clients reach `shoal daemon`.
type DaemonConfig struct {
	// Socket is the API socket; relative paths are under $SHOAL_HOME.
	Socket string `toml:"socket"`
	// MetricsListen is host:port of the listener of /metrics, /healthz
	// and /readyz, apart from the registry; empty serves none.
	MetricsListen string `toml:"metrics-listen"`
}

// RegistryConfig is the OCI distribution API that `shoal daemon` serves.
type RegistryConfig struct {
	// Listen is host:port; empty turns the registry off.
	Listen string `toml:"listen"`
	// FetchTimeout bounds how long a request waits for content from peers.
	FetchTimeout Duration `toml:"fetch-timeout"`
	// Htpasswd is a file of bcrypt entries (htpasswd -B). With it, pushes
	// need credentials; it is required for any address but loopback.
	Htpasswd string `toml:"htpasswd"`
	// PullAuth makes pulls need credentials too.
	PullAuth bool `toml:"pull-auth"`
	// TLSCert and TLSKey serve HTTPS, so that credentials are not sent in
	// the clear.
	TLSCert string `toml:"tls-cert"`
	TLSKey  string `toml:"tls-key"`
	// MirrorTagTTL is how long a mirrored registry's tag is served as
	// last resolved before the registry is asked again.
	MirrorTagTTL Duration `toml:"mirror-tag-ttl"`
	// MirrorCacheSize bounds what the mirror keeps ("50GiB"); 0 keeps
	// everything.
	MirrorCacheSize Size `toml:"mirror-cache-size"`
}

// ContainerdConfig is how `shoal daemon` plugs into containerd.
type ContainerdConfig struct {
	// Socket serves containerd's snapshots API, for a proxy plugin;
	// relative paths are under $SHOAL_HOME; empty turns it off. The
	// snapshotter mounts filesystems, so it runs only as root.
	Socket string `toml:"socket"`
	// Root is where the snapshots live; relative paths are under
	// $SHOAL_HOME. overlayfs needs it on a filesystem that can be an
	// upper directory (ext4, xfs; not overlayfs itself).
	Root string `toml:"root"`
	// FetchTimeout bounds how long preparing a lazy layer waits for its
	// index, and how long a read of its files waits for peers.
	FetchTimeout Duration `toml:"fetch-timeout"`
}

// GroupConfig makes `shoal daemon` a member of a group that shards images
// among its members (package group).
type GroupConfig struct {
	// Name is the group; empty is no group.
	Name string `toml:"name"`
	// Grace is how long a member that went away still counts as one, so
	// that restarts and short partitions move no data.
	Grace Duration `toml:"grace"`
	// Key is the group key file (`shoal group key`; relative paths are
	// under $SHOAL_HOME), the same on every member: members prove they
	// hold it. It must be readable by its owner only.
	Key string `toml:"key"`
}

// Paths returns c with its paths absolute, relative ones taken under home.
func (c GroupConfig) Paths(home string) GroupConfig {
	c.Key = UnderHome(home, c.Key)
	return c
}

// MountConfig is what lazy mounts (`shoal mount`, the snapshotter) keep
// of what they read.
type MountConfig struct {
	// FileCache is the directory of the files that mounts read whole,
	// kept as plain files and served from there (lazyfs.FileCache);
	// relative paths are under $SHOAL_HOME; empty turns it off.
	FileCache string `toml:"file-cache"`
	// FileCacheSize bounds the files kept, as "4GiB" or a byte count.
	FileCacheSize Size `toml:"file-cache-size"`
}

// Paths returns c with its paths absolute, relative ones taken under home.
func (c MountConfig) Paths(home string) MountConfig {
	c.FileCache = UnderHome(home, c.FileCache)
	return c
}

// Size is a byte count written as "512MiB", "4GiB" or a plain number in
// the config file.
type Size int64

var sizeUnits = []struct {
	suffix string
	bytes  int64
}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}, {"", 1}}

// UnmarshalText reads "4GiB", "512MiB", "4096" and the like.
func (s *Size) UnmarshalText(b []byte) error {
	text := strings.TrimSpace(string(b))
	for _, u := range sizeUnits {
		num, ok := strings.CutSuffix(text, u.suffix)
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
		if err != nil || n < 0 || n > math.MaxInt64/u.bytes {
			break
		}
		*s = Size(n * u.bytes)
		return nil
	}
	return fmt.Errorf("size %q: want a byte count such as 4GiB, 512MiB or 1048576", text)
}

// MarshalText writes the size in the largest unit that divides it.
func (s Size) MarshalText() ([]byte, error) {
	for _, u := range sizeUnits {
		if u.bytes > 1 && s != 0 && int64(s)%u.bytes == 0 {
			return fmt.Appendf(nil, "%d%s", int64(s)/u.bytes, u.suffix), nil
		}
	}
	return fmt.Appendf(nil, "%d", int64(s)), nil
}

// Set, String and Type make a Size a command-line flag value.
func (s *Size) Set(v string) error { return s.UnmarshalText([]byte(v)) }
func (s Size) String() string {
	b, _ := s.MarshalText()
	return string(b)
}
func (Size) Type() string { return "size" }

// Duration is a time.Duration written as "30s" in the config file.
type Duration struct{ time.Duration }

// UnmarshalText reads "30s", "2m" and the like.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	if v < 0 {
		return fmt.Errorf("duration %s is negative", v)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration as time.Duration prints it.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// DefaultConfig is what `shoal init` writes.
func DefaultConfig() Config {
	return Config{
		Swarm: SwarmConfig{
			Listen: []string{"/ip4/0.0.0.0/tcp/4051", "/ip4/0.0.0.0/udp/4051/quic-v1"},
			MDNS:   true,
			Key:    "swarm.key",
			DHT:    DHTLAN,
		},
		Datastore:  DatastoreConfig{Blocks: "flatfs"},
		Import:     ImportConfig{Layout: blob.Kubo.Name},
		Daemon:     DaemonConfig{Socket: "shoal.sock"},
		Registry:   RegistryConfig{Listen: "127.0.0.1:5050", FetchTimeout: Duration{30 * time.Second}, MirrorTagTTL: Duration{time.Minute}},
		Containerd: ContainerdConfig{Socket: "containerd.sock", Root: "snapshotter", FetchTimeout: Duration{30 * time.Second}},
		Group:      GroupConfig{Grace: Duration{time.Minute}, Key: "group.key"},
		Mount:      MountConfig{FileCache: "filecache", FileCacheSize: 4 << 30},
	}
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	for _, a := range append(append([]string{}, c.Swarm.Listen...), c.Swarm.Peers...) {
		if _, err := multiaddr.NewMultiaddr(a); err != nil {
			return fmt.Errorf("config: multiaddr %q: %w", a, err)
		}
	}
	if _, err := ParseAllowlist(c.Swarm.Allow); err != nil {
		return err
	}
	if err := checkDHTMode(c.Swarm.DHT); err != nil {
		return err
	}
	switch c.Datastore.Blocks {
	case "flatfs", "pebble":
	default:
		return fmt.Errorf("config: datastore.blocks %q: want \"flatfs\" or \"pebble\"", c.Datastore.Blocks)
	}
	if c.Registry.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Registry.Listen); err != nil {
			return fmt.Errorf("config: registry.listen %q: %w", c.Registry.Listen, err)
		}
	}
	if (c.Registry.TLSCert == "") != (c.Registry.TLSKey == "") {
		return errors.New("config: registry.tls-cert and registry.tls-key go together")
	}
	if c.Registry.PullAuth && c.Registry.Htpasswd == "" {
		return errors.New("config: registry.pull-auth needs registry.htpasswd")
	}
	if _, err := blob.ParseLayout(c.Import.Layout); err != nil {
		return fmt.Errorf("config: import.layout: %w", err)
	}
	return nil
}

// ParseConfig reads a config file's text over the defaults.
func ParseConfig(data []byte) (Config, error) {
	c := DefaultConfig()
	md, err := toml.Decode(string(data), &c)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return Config{}, fmt.Errorf("config: unknown setting %q", und[0].String())
	}
	return c, c.Validate()
}

// LoadConfig reads home/config.toml, or the defaults when there is none.
func LoadConfig(home string) (Config, error) {
	p := filepath.Join(home, "config.toml")
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return DefaultConfig(), nil
	}
	if err != nil {
		return Config{}, err
	}
	c, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", p, err)
	}
	return c, nil
}

// writeConfig writes the config of a new home; an existing one stays
// (fs.ErrExist).
func writeConfig(home string, c Config) error {
	p := filepath.Join(home, "config.toml")
	if _, err := os.Stat(p); err == nil {
		return fmt.Errorf("%s: %w", p, fs.ErrExist)
	}
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(c); err != nil {
		return err
	}
	return WriteFileDurably(p, buf.Bytes(), 0o644)
}

// SocketPath is the daemon's API socket under home.
func (c Config) SocketPath(home string) string { return UnderHome(home, c.Daemon.Socket) }

// UnderHome resolves a path of the config: relative ones are under home.
func UnderHome(home, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(home, p)
}

// Paths returns c with its paths absolute, relative ones taken under home.
func (c ContainerdConfig) Paths(home string) ContainerdConfig {
	c.Socket = UnderHome(home, c.Socket)
	c.Root = UnderHome(home, c.Root)
	return c
}

// The DHT modes of swarm.dht.
const (
	// DHTOff runs no DHT.
	DHTOff = "off"
	// DHTLAN is kubo's LAN DHT (protocol /ipfs/lan/kad/1.0.0): peers on
	// private and loopback addresses only.
	DHTLAN = "lan"
	// DHTWAN is the public Amino DHT protocol (/ipfs/kad/1.0.0) over the
	// configured peers; shoal adds no bootstrap peers of its own.
	DHTWAN = "wan"
)

func checkDHTMode(mode string) error {
	switch mode {
	case DHTOff, DHTLAN, DHTWAN:
		return nil
	}
	return fmt.Errorf("config: swarm.dht %q: want \"lan\", \"wan\" or \"off\"", mode)
}

// ParseAllowlist reads peer IDs; an empty list allows every peer.
func ParseAllowlist(ids []string) (map[peer.ID]bool, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	allow := make(map[peer.ID]bool, len(ids))
	for _, s := range ids {
		id, err := peer.Decode(s)
		if err != nil {
			return nil, fmt.Errorf("config: swarm.allow %q: %w", s, err)
		}
		allow[id] = true
	}
	return allow, nil
}
