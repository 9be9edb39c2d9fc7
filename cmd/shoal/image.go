package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/containerd/errdefs"
	"github.com/ipfs/go-cid"
	"github.com/shoal-ipfs/shoal/internal/errkind"
	"github.com/shoal-ipfs/shoal/pkg/api"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/lazyfs"
	"github.com/shoal-ipfs/shoal/pkg/progress"
	"github.com/shoal-ipfs/shoal/pkg/transport"
	"github.com/spf13/cobra"
)

// pushReport is what push --json prints.
type pushReport struct {
	Root      string   // the image's root CID
	Source    string   // SOURCE as given
	Platforms []string // os/arch[/variant] of its manifests
	Size      int64    // bytes of its blobs, each counted once
	Seconds   float64  // how long the push took
}

// pullReport is what pull --json prints.
type pullReport struct {
	Root        string   // the image's root CID
	Destination string   // DEST as given
	Digest      string   // the digest of the index or manifest written
	Platforms   []string // os/arch[/variant] of its manifests
	Size        int64    // bytes of its blobs, each counted once
	Seconds     float64  // how long the pull took
}

func pushCmd(g *globals) *cobra.Command {
	var platforms []string
	var plainHTTP, index, asJSON bool
	c := &cobra.Command{
		Use: "push SOURCE",
		Example: `  shoal push oci:./layout:v1                      # prints the root CID last
  shoal push docker://docker.io/library/debian:bookworm
  shoal push --plain-http docker://127.0.0.1:5000/app:1
  shoal push --platform linux/amd64 oci-archive:image.tar
  shoal push --json docker-archive:saved.tar`,
		Short: "Add an image to IPFS and pin it; prints its root CID",
		Long: `Add an image to IPFS and pin it; the last line of stdout is the image's root CID.

SOURCE is oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE or docker://REF.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			pls, err := parsePlatforms(platforms)
			if err != nil {
				return err
			}
			src, err := transport.OpenSource(ctx, args[0], transport.SourceOptions{PlainHTTP: plainHTTP})
			if errors.Is(err, transport.ErrUnknownTransport) {
				return usageError{err}
			}
			if err != nil {
				return err
			}
			defer src.Close()
			return g.withAPI(ctx, false, func(st api.API) error {
				start := time.Now()
				bar := progress.New(cmd.ErrOrStderr(), "push")
				res, err := image.Push(ctx, st, src, image.PushOptions{Platforms: pls, Index: index, Progress: bar})
				bar.Done()
				if err != nil {
					return err
				}
				warnUnindexed(cmd.ErrOrStderr(), res)
				took := time.Since(start)
				if asJSON {
					return printJSON(cmd.OutOrStdout(), pushReport{Root: res.Root.String(), Source: args[0], Platforms: res.Image.Platforms, Size: res.Image.Size, Seconds: took.Seconds()})
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "pushed %s (%s, %s) in %s\n", args[0], strings.Join(res.Image.Platforms, ","), humanBytes(res.Image.Size), took.Round(time.Millisecond))
				fmt.Fprintln(cmd.OutOrStdout(), res.Root)
				return nil
			})
		},
	}
	c.Flags().StringArrayVar(&platforms, "platform", nil, "keep only this platform, os/arch[/variant] (repeatable; default all)")
	c.Flags().BoolVar(&plainHTTP, "plain-http", false, "reach docker:// registries over plain HTTP (local test registries)")
	c.Flags().BoolVar(&index, "index", true, "index every layer for lazy mounting (--index=false skips it)")
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON object: Root, Source, Platforms, Size (bytes), Seconds")
	return c
}

// warnUnindexed says which layers a push left without an index, and why.
func warnUnindexed(w io.Writer, res image.Result) {
	for _, u := range res.Unindexed {
		fmt.Fprintf(w, "layer %s has no index, so a mount fetches it whole: %v\n", u.Digest, u.Err)
	}
}

func indexCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	var prefetch string
	c := &cobra.Command{
		Use: "index CID",
		Example: `  shoal index bafk...                             # indexes for layers that lack one
  shoal index bafk... --prefetch startup.list     # and a prefetch list (shoal mount --record)`,
		Short: "Add layer indexes (and a prefetch list) to an image; prints the new root CID",
		Long: `Add an index to every layer of an image that lacks one (an image pushed by
nerdctl, say), so that it can be mounted lazily, and with --prefetch the list
of files a workload reads (written by shoal mount --record), which mounts then
fetch first. The descriptors change, so the image gets a new root CID: the
last line of stdout. Layer blobs are referenced, not copied.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			root, err := transport.ParseCID(args[0])
			if err != nil {
				return usageError{err}
			}
			var list []byte
			if prefetch != "" {
				if list, err = os.ReadFile(prefetch); err != nil {
					return err
				}
				if _, err := lazyfs.ParsePrefetchList(list); err != nil {
					return fmt.Errorf("%s: %w", prefetch, err)
				}
			}
			return g.withAPI(cmd.Context(), true, func(st api.API) error {
				var attach map[string]cid.Cid
				if list != nil {
					c, err := st.Add(cmd.Context(), bytes.NewReader(list))
					if err != nil {
						return err
					}
					attach = map[string]cid.Cid{lazyfs.AnnotationPrefetch: c}
				}
				res, err := image.AddIndexes(cmd.Context(), st, root, timeout, attach)
				if err != nil {
					return err
				}
				warnUnindexed(cmd.ErrOrStderr(), res)
				fmt.Fprintln(cmd.OutOrStdout(), res.Root)
				return nil
			})
		},
	}
	c.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "give up when nothing has arrived for this long (0: never)")
	c.Flags().StringVar(&prefetch, "prefetch", "", "attach this prefetch list (from shoal mount --record) to the image")
	addPeerFlag(c, g)
	return c
}

func pullCmd(g *globals) *cobra.Command {
	var to string
	var asJSON, ipfsURLs bool
	var timeout time.Duration
	var ctrd containerdFlags
	c := &cobra.Command{
		Use: "pull CID --to DEST",
		Example: `  shoal pull bafk... --to oci:./out:v1
  shoal pull ipfs://bafk... --peer /dns4/node-a/tcp/4051 --to oci-archive:image.tar
  shoal pull bafk... --to oci:./out:v1 --ipfs-urls   # as stored in IPFS
  shoal pull bafk... --to containerd:docker.io/library/app:1   # lazily, through the daemon`,
		Short: "Fetch an image by CID from peers, verify it, and write it out",
		Long: `Fetch an image by CID (bare or ipfs://CID) from the connected peers, verify
every blob against its digest, write it to DEST and pin it.

DEST is oci:DIR[:TAG] or oci-archive:FILE[:TAG], written as registries serve
the image (shoal's ipfs:// urls left out, so that every OCI tool copies it
whole; --ipfs-urls keeps them), or containerd:REF, which
creates image REF in containerd with its layers on shoal's snapshotter:
nothing of them is fetched until a container reads it, and
"ctr run --snapshotter shoal REF ..." starts at once. That needs a running
shoal daemon (as root) plugged into containerd ("shoal containerd config").`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			root, err := transport.ParseCID(args[0])
			if err != nil {
				return usageError{err}
			}
			if to == "" {
				return usageError{errors.New("pull needs --to DEST (oci:DIR[:TAG], oci-archive:FILE[:TAG] or containerd:REF)")}
			}
			if ref, ok := strings.CutPrefix(to, containerdPrefix); ok {
				if asJSON || ipfsURLs {
					return usageError{errors.New("--json and --ipfs-urls go with oci: and oci-archive: destinations")}
				}
				return g.withAPI(ctx, true, func(st api.API) error {
					if _, ok := st.(*api.Client); !ok {
						return errkind.New(fmt.Sprintf("pull --to %s needs a running shoal daemon: its snapshotter serves the layers to containerd", to), errdefs.ErrUnavailable)
					}
					return importToContainerd(ctx, cmd, st, root, ref, ctrd, timeout)
				})
			}
			dst, err := transport.OpenDestination(to)
			if errors.Is(err, transport.ErrUnknownTransport) {
				return usageError{err}
			}
			if err != nil {
				return err
			}
			defer dst.Close()
			return g.withAPI(ctx, true, func(st api.API) error {
				start := time.Now()
				bar := progress.New(cmd.ErrOrStderr(), "pull")
				res, err := image.Pull(ctx, st, root, dst, image.PullOptions{Timeout: timeout, Progress: bar, IPFSURLs: ipfsURLs})
				bar.Done()
				if err != nil {
					return err
				}
				took := time.Since(start)
				if asJSON {
					return printJSON(cmd.OutOrStdout(), pullReport{Root: root.String(), Destination: to, Digest: res.Descriptor.Digest.String(), Platforms: res.Image.Platforms, Size: res.Image.Size, Seconds: took.Seconds()})
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "pulled %s (%s, %s) to %s in %s\n", root, strings.Join(res.Image.Platforms, ","), humanBytes(res.Image.Size), to, took.Round(time.Millisecond))
				fmt.Fprintln(cmd.OutOrStdout(), res.Descriptor.Digest)
				return nil
			})
		},
	}
	c.Flags().StringVar(&to, "to", "", "destination: oci:DIR[:TAG], oci-archive:FILE[:TAG] or containerd:REF")
	c.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "give up when no block has arrived for this long (0: never)")
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON object: Root, Destination, Digest (of the index or manifest written), Platforms, Size (bytes), Seconds")
	c.Flags().BoolVar(&ipfsURLs, "ipfs-urls", false, "write the image as stored in IPFS: descriptors keep their ipfs:// urls, documents the digests the root names (tools that copy layouts then leave the layers behind)")
	ctrd.add(c)
	addPeerFlag(c, g)
	return c
}

func inspectCmd(g *globals) *cobra.Command {
	var asJSON bool
	var timeout time.Duration
	c := &cobra.Command{
		Use: "inspect CID",
		Example: `  shoal inspect bafk...
  shoal inspect bafk... --json`,
		Short: "Show an image's tree: root, index, manifests, config and layers",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			root, err := transport.ParseCID(args[0])
			if err != nil {
				return usageError{err}
			}
			return g.withAPI(cmd.Context(), true, func(st api.API) error {
				tree, err := image.Inspect(cmd.Context(), st, root, timeout)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), tree)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ROLE\tMEDIA TYPE\tDIGEST\tSIZE\tCID")
				var walk func(n *image.Node, depth int)
				walk = func(n *image.Node, depth int) {
					role := strings.Repeat("  ", depth) + n.Role
					if n.Platform != nil {
						role += " " + n.Platform.OS + "/" + n.Platform.Architecture
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", role, n.MediaType, n.Digest, n.Size, n.CID)
					for _, c := range n.Children {
						walk(c, depth+1)
					}
				}
				walk(tree, 0)
				return tw.Flush()
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the tree as JSON")
	c.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "give up when nothing has arrived for this long (0: never)")
	addPeerFlag(c, g)
	return c
}

func parsePlatforms(ss []string) ([]ocispec.Platform, error) {
	var out []ocispec.Platform
	for _, s := range ss {
		p, err := image.ParsePlatform(s)
		if err != nil {
			return nil, usageError{err}
		}
		out = append(out, p)
	}
	return out, nil
}
