package containerd

import (
	"io"
	"strings"
	"text/template"
)

// PluginConfig is what containerd's config needs to plug in a shoal
// daemon: the snapshotter (and, if asked, the content store) as proxy
// plugins on the daemon's socket, CRI's pulls through them, and the hosts
// directory where the registry's hosts.toml goes.
type PluginConfig struct {
	// Version is containerd's config version: 2 for containerd 1.x, 3
	// for 2.x.
	Version int
	// Content replaces containerd's content store with shoal's.
	Content bool
	// Socket is the daemon's containerd plugins' socket; Root the
	// snapshotter's root, which containerd 2.x is told.
	Socket, Root string
	// Registry is the daemon's registry, host:port, if it serves one.
	Registry string
	// Platform is the platform unpacked by the transfer service (os/arch).
	Platform string
	// Running says whether the values come from a running daemon or
	// from its config.toml alone.
	Running bool
	// HostsDir is containerd's hosts directory (certs.d).
	HostsDir string
	// Snapshotter is the name the snapshotter is plugged in under.
	Snapshotter string
}

// WriteConfig writes the fragment of containerd's config.toml that plugs
// in the daemon c describes.
func WriteConfig(w io.Writer, c PluginConfig) error {
	var b strings.Builder
	if err := configTemplate.Execute(&b, c); err != nil {
		return err
	}
	_, err := io.WriteString(w, b.String())
	return err
}

var configTemplate = template.Must(template.New("config").Parse(`# shoal {{if .Running}}(the daemon running now{{else}}(from config.toml; no daemon is running{{end}}): add to /etc/containerd/config.toml
version = {{.Version}}
{{- if .Content}}

# containerd's content store is shoal's: its own is turned off (merge this
# with any disabled_plugins you have; it must come before the tables).
disabled_plugins = ["io.containerd.content.v1.content"]
[proxy_plugins.{{.Snapshotter}}-content]
  type = "content"
  address = "{{.Socket}}"
{{- end}}

[proxy_plugins.{{.Snapshotter}}]
  type = "snapshot"
  address = "{{.Socket}}"
{{- if eq .Version 3}}
  [proxy_plugins.{{.Snapshotter}}.exports]
    root = "{{.Root}}"
    # Pulls pass each layer's image reference and digest to the snapshotter.
    enable_remote_snapshot_annotations = "true"

# ctr pull and the transfer service may unpack into either snapshotter.
[[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
  platform = "{{.Platform}}"
  snapshotter = "overlayfs"
  differ = "walking"
[[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
  platform = "{{.Platform}}"
  snapshotter = "{{.Snapshotter}}"
  differ = "walking"

# Kubernetes pulls lazily through shoal.
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "{{.Snapshotter}}"
  disable_snapshot_annotations = false
[plugins.'io.containerd.cri.v1.images'.registry]
  config_path = "{{.HostsDir}}"
{{- else}}

# Kubernetes pulls lazily through shoal.
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "{{.Snapshotter}}"
  disable_snapshot_annotations = false
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "{{.HostsDir}}"
{{- end}}
{{if .Registry}}
# And shoal's registry, for images named {{.Registry}}/ipfs/CID:
# {{.HostsDir}}/{{.Registry}}/hosts.toml
#   server = "http://{{.Registry}}"
#   [host."http://{{.Registry}}"]
#     capabilities = ["pull", "resolve"]
{{- end}}
`))
