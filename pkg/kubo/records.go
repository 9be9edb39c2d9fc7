package kubo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/url"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/ipfs/go-cid"
	"github.com/shoal-ipfs/shoal/pkg/catalog"
	"github.com/shoal-ipfs/shoal/pkg/store"
	"golang.org/x/sync/errgroup"
)

// Where shoal keeps its records in kubo's MFS. MFS is in kubo's GC roots,
// so the records survive `ipfs repo gc`; and `ipfs files ls /shoal/images`
// shows them.
const (
	imagesDir = "/shoal/images"
	holdsDir  = "/shoal/holds"
)

// pinPrefix starts the name of every pin shoal makes. Shoal unpins only
// pins so named: a blob the user had pinned already stays pinned.
const pinPrefix = "shoal:"

// maxRecord bounds a record read back from MFS.
const maxRecord = 64 << 20

func imagePath(root cid.Cid) string { return imagesDir + "/" + root.String() + ".json" }

// holdPath is the file of hold name: one file a hold, the name escaped
// into a single path segment.
func holdPath(name string) string { return holdsDir + "/" + holdFile(name) }

func holdFile(name string) string { return url.PathEscape(name) + ".json" }

// holdName is the name of the hold whose file is file.
func holdName(file string) (string, bool) {
	esc, ok := strings.CutSuffix(file, ".json")
	if !ok {
		return "", false
	}
	name, err := url.PathUnescape(esc)
	return name, err == nil && holdFile(name) == file
}

// checkHoldName refuses an empty name. Any other is safe: its file name
// escapes it.
func checkHoldName(name string) error {
	if name == "" {
		return errors.New("hold name is empty")
	}
	return nil
}

// writeFile writes data to the MFS file path, creating it and its parents.
func (c *Client) writeFile(ctx context.Context, path string, data []byte) error {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	part, err := mw.CreateFormFile("file", "record.json")
	if err != nil {
		return err
	}
	if _, err := part.Write(data); err != nil {
		return err
	}
	if err := mw.Close(); err != nil {
		return err
	}
	args := url.Values{"arg": {path}, "create": {"true"}, "parents": {"true"}, "truncate": {"true"}}
	out, err := c.rpc.call(ctx, "files/write", args, &body, mw.FormDataContentType())
	if err != nil {
		return err
	}
	defer out.Close()
	_, err = io.Copy(io.Discard, out)
	return err
}

// readJSON decodes the MFS file path into v.
func (c *Client) readJSON(ctx context.Context, path string, v any) error {
	out, err := c.rpc.call(ctx, "files/read", url.Values{"arg": {path}}, nil, "")
	if err != nil {
		return err
	}
	defer out.Close()
	data, err := io.ReadAll(io.LimitReader(out, maxRecord+1))
	if err != nil {
		return err
	}
	if len(data) > maxRecord {
		return fmt.Errorf("%s in kubo's MFS: larger than %d bytes", path, maxRecord)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s in kubo's MFS: %w", path, err)
	}
	return nil
}

// remove removes the MFS file path; a missing one is not an error. kubo
// reports one as a message in the output and "can't remove some files" at
// its end.
func (c *Client) remove(ctx context.Context, path string) error {
	missing := false
	err := stream(ctx, c.rpc, "files/rm", url.Values{"arg": {path}}, func(msg string) {
		missing = missing || strings.Contains(msg, "file does not exist")
	})
	if err != nil && (missing || notExist(err)) {
		return nil
	}
	return err
}

// list is the names in the MFS directory dir; none if it does not exist.
func (c *Client) list(ctx context.Context, dir string) ([]string, error) {
	var out struct {
		Entries []struct{ Name string }
	}
	err := one(ctx, c.rpc, "files/ls", url.Values{"arg": {dir}, "U": {"true"}}, &out)
	if notExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(out.Entries))
	for _, e := range out.Entries {
		names = append(names, e.Name)
	}
	return names, nil
}

// pin pins blobs recursively under name, those that are not pinned
// recursively already: a blob pinned by the user keeps the user's pin.
// kubo fetches from its peers what it does not hold.
func (c *Client) pin(ctx context.Context, name string, blobs []string) error {
	pinned, err := c.recursivePins(ctx)
	if err != nil {
		return err
	}
	args := url.Values{"recursive": {"true"}, "name": {name}}
	for _, b := range blobs {
		if _, err := cid.Decode(b); err != nil {
			return fmt.Errorf("blob %q: %w", b, err)
		}
		if _, ok := pinned[b]; !ok {
			args.Add("arg", b)
		}
	}
	return c.pinCommand(ctx, "pin/add", args)
}

// pinCommand runs a pin command if there is any CID in its args.
func (c *Client) pinCommand(ctx context.Context, command string, args url.Values) error {
	if len(args["arg"]) == 0 {
		return nil
	}
	return run(ctx, c.rpc, command, args)
}

// recursivePins maps the CID of each recursive pin to its name.
func (c *Client) recursivePins(ctx context.Context) (map[string]string, error) {
	pins := map[string]string{}
	err := stream(ctx, c.rpc, "pin/ls", url.Values{"type": {"recursive"}, "names": {"true"}, "stream": {"true"}}, func(p struct{ Cid, Name string }) {
		pins[p.Cid] = p.Name
	})
	return pins, err
}

// unpinUnused unpins those of blobs that no image record and no hold
// names, and that shoal pinned. The caller holds pinMu and has already
// dropped its own record.
func (c *Client) unpinUnused(ctx context.Context, blobs []string) error {
	named, err := c.namedBlobs(ctx)
	if err != nil {
		return err
	}
	pins, err := c.recursivePins(ctx)
	if err != nil {
		return err
	}
	args := url.Values{"recursive": {"true"}}
	seen := map[string]bool{}
	for _, b := range blobs {
		name, pinned := pins[b]
		if named[b] || seen[b] || !pinned || !strings.HasPrefix(name, pinPrefix) {
			continue
		}
		seen[b] = true
		args.Add("arg", b)
	}
	return c.pinCommand(ctx, "pin/rm", args)
}

// namedBlobs is every blob an image record or a hold names.
func (c *Client) namedBlobs(ctx context.Context) (map[string]bool, error) {
	named := map[string]bool{}
	imgs, err := c.Images(ctx)
	if err != nil {
		return nil, err
	}
	for _, img := range imgs {
		for _, b := range img.Blobs {
			named[b] = true
		}
	}
	holds, err := c.holds(ctx)
	if err != nil {
		return nil, err
	}
	for _, blobs := range holds {
		for _, b := range blobs {
			named[b] = true
		}
	}
	return named, nil
}

// readAll reads the JSON files of dir, eight at a time, into a T each.
func readAll[T any](ctx context.Context, c *Client, dir string, files []string) ([]T, error) {
	out := make([]T, len(files))
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, f := range files {
		g.Go(func() error {
			err := c.readJSON(ctx, dir+"/"+f, &out[i])
			if notExist(err) { // removed since the listing
				return nil
			}
			return err
		})
	}
	return out, g.Wait()
}

// PinImage pins every blob of an image recursively, then writes its record,
// so that an image is listed only once all of it is pinned.
func (c *Client) PinImage(ctx context.Context, img catalog.Image) error {
	root, err := cid.Decode(img.CID)
	if err != nil {
		return fmt.Errorf("pin image: root %q: %w", img.CID, err)
	}
	c.pinMu.Lock()
	defer c.pinMu.Unlock()
	if err := c.pin(ctx, pinPrefix+root.String(), img.Blobs); err != nil {
		return fmt.Errorf("pin image %s: %w", root, err)
	}
	if old, err := c.Image(ctx, root); err == nil {
		img = catalog.Merge(old, img)
	}
	data, err := json.Marshal(img)
	if err != nil {
		return err
	}
	if err := c.writeFile(ctx, imagePath(root), data); err != nil {
		return fmt.Errorf("pin image %s: record: %w", root, err)
	}
	return nil
}

// Images lists the images shoal pinned in kubo, newest first.
func (c *Client) Images(ctx context.Context) ([]catalog.Image, error) {
	files, err := c.list(ctx, imagesDir)
	if err != nil {
		return nil, err
	}
	recs, err := readAll[catalog.Image](ctx, c, imagesDir, files)
	if err != nil {
		return nil, err
	}
	out := []catalog.Image{}
	for _, img := range recs {
		if img.CID != "" {
			out = append(out, img)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}

// Image returns the record of one image shoal pinned in kubo.
func (c *Client) Image(ctx context.Context, root cid.Cid) (catalog.Image, error) {
	var img catalog.Image
	err := c.readJSON(ctx, imagePath(root), &img)
	if notExist(err) {
		return catalog.Image{}, fmt.Errorf("image %s: %w", root, errdefs.ErrNotFound)
	}
	return img, err
}

// RemoveImage forgets an image and unpins those of its blobs that nothing
// else names; kubo's next GC frees their blocks.
func (c *Client) RemoveImage(ctx context.Context, root cid.Cid) error {
	c.pinMu.Lock()
	defer c.pinMu.Unlock()
	img, err := c.Image(ctx, root)
	if err != nil {
		return err
	}
	// The record goes first: a crash between the two steps leaves pins
	// without a record, which GC unpins, never a record whose blobs are
	// gone.
	if err := c.remove(ctx, imagePath(root)); err != nil {
		return err
	}
	return c.unpinUnused(ctx, img.Blobs)
}

// Hold pins blobs under name, replacing what name held before; blobs it
// no longer names are unpinned unless something else names them.
func (c *Client) Hold(ctx context.Context, name string, blobs ...cid.Cid) error {
	if err := checkHoldName(name); err != nil {
		return err
	}
	ss := make([]string, len(blobs))
	for i, b := range blobs {
		ss[i] = b.String()
	}
	data, err := json.Marshal(ss)
	if err != nil {
		return err
	}
	c.pinMu.Lock()
	defer c.pinMu.Unlock()
	if err := c.pin(ctx, pinPrefix+"hold", ss); err != nil {
		return fmt.Errorf("hold %s: %w", name, err)
	}
	var old []string
	if err := c.readJSON(ctx, holdPath(name), &old); err != nil && !notExist(err) {
		return err
	}
	if err := c.writeFile(ctx, holdPath(name), data); err != nil {
		return fmt.Errorf("hold %s: %w", name, err)
	}
	return c.unpinUnused(ctx, old)
}

// Release drops the hold name; blobs nothing else names are unpinned.
// Releasing an unknown name does nothing.
func (c *Client) Release(ctx context.Context, name string) error {
	if err := checkHoldName(name); err != nil {
		return err
	}
	c.pinMu.Lock()
	defer c.pinMu.Unlock()
	var old []string
	err := c.readJSON(ctx, holdPath(name), &old)
	if notExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := c.remove(ctx, holdPath(name)); err != nil {
		return err
	}
	return c.unpinUnused(ctx, old)
}

// holds maps each hold's name to its blobs.
func (c *Client) holds(ctx context.Context) (map[string][]string, error) {
	files, err := c.list(ctx, holdsDir)
	if err != nil {
		return nil, err
	}
	var names, kept []string
	for _, f := range files {
		if name, ok := holdName(f); ok {
			names, kept = append(names, name), append(kept, f)
		}
	}
	blobs, err := readAll[[]string](ctx, c, holdsDir, kept)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]string, len(names))
	for i, name := range names {
		out[name] = blobs[i]
	}
	return out, nil
}

// GC unpins what shoal pinned and nothing names any more (what a crash
// between removing a record and unpinning leaves), then runs kubo's GC,
// which frees every block no pin and no MFS file reaches: shoal's, and
// whatever else of kubo's is unpinned. Bytes are as `ipfs repo stat`
// counts them.
func (c *Client) GC(ctx context.Context) (store.GCResult, error) {
	c.pinMu.Lock()
	defer c.pinMu.Unlock()
	pins, err := c.recursivePins(ctx)
	if err != nil {
		return store.GCResult{}, err
	}
	var ours []string
	for p, name := range pins {
		if strings.HasPrefix(name, pinPrefix) {
			ours = append(ours, p)
		}
	}
	if err := c.unpinUnused(ctx, ours); err != nil {
		return store.GCResult{}, err
	}
	before, err := c.repoStat(ctx)
	if err != nil {
		return store.GCResult{}, err
	}
	var res store.GCResult
	var gcErrs []error
	err = stream(ctx, c.rpc, "repo/gc", url.Values{"stream-errors": {"true"}}, func(ev struct {
		Key   map[string]string
		Error string
	}) {
		if ev.Error != "" {
			gcErrs = append(gcErrs, errors.New(ev.Error))
		} else if ev.Key != nil {
			res.Blocks++
		}
	})
	if err == nil && len(gcErrs) > 0 {
		err = fmt.Errorf("kubo repo/gc: %w", errors.Join(gcErrs...))
	}
	if err != nil {
		return res, err
	}
	after, err := c.repoStat(ctx)
	if err != nil {
		return res, err
	}
	res.Kept = int(after.NumObjects)
	if after.RepoSize < before.RepoSize {
		res.Bytes = int64(before.RepoSize - after.RepoSize)
	}
	return res, nil
}

type repoStat struct {
	RepoSize   uint64
	NumObjects uint64
}

func (c *Client) repoStat(ctx context.Context) (repoStat, error) {
	var st repoStat
	return st, one(ctx, c.rpc, "repo/stat", nil, &st)
}

// ErrVerifyInKubo is Verify's answer: kubo's blocks are kubo's to check.
var ErrVerifyInKubo = fmt.Errorf("verify: the blocks are kubo's; run `ipfs repo verify` on the kubo node: %w", errdefs.ErrNotImplemented)

// Verify is not done through kubo: its own `ipfs repo verify` checks its
// blocks.
func (c *Client) Verify(context.Context, bool) (store.VerifyResult, error) {
	return store.VerifyResult{}, ErrVerifyInKubo
}
