package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-ipfs/shoal/internal/testbed"
	"github.com/shoal-ipfs/shoal/internal/testimage"
	"github.com/shoal-ipfs/shoal/internal/testproc"
)

// TestPullSurvivesSeedersFailing: three seeders hold the Debian image, each
// on its own testbed host behind a 100 Mbit/s link that loses 1% of the
// packets; a fourth host pulls it from all three. During the pull one
// seeder is killed and another is cut off the network and comes back. The
// pull completes, every blob verified.
func TestPullSurvivesSeedersFailing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tb := testbed.ForTest(t, 4, testbed.Link{Rate: "100mbit", Loss: 1})
	layout := debianImage(t)
	var seeders []*shoalDaemon
	var root string
	for _, h := range tb.Hosts[:3] {
		d := startShoalDaemonOn(t, h)
		out := strings.TrimSpace(d.run(t, "push", "oci:"+layout+":bookworm"))
		root = out[strings.LastIndex(out, "\n")+1:]
		seeders = append(seeders, d)
	}

	home, err := os.MkdirTemp("", "shoal-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(home)
	puller := tb.Hosts[3]
	dest := filepath.Join(t.TempDir(), "oci")
	args := []string{"--home", home, "pull", root, "--to", "oci:" + dest + ":bookworm", "--timeout", "30s"}
	for _, s := range seeders {
		args = append(args, "--peer", s.Peer)
	}
	pull := puller.Command(ctx, shoalBinary(t), args...)
	var logs testproc.Logs
	pull.Stdout, pull.Stderr = &logs, &logs
	start := time.Now()
	if err := pull.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	seeders[0].proc.Process.Signal(syscall.SIGKILL)
	if err := tb.Cut(tb.Hosts[1]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if err := tb.Heal(tb.Hosts[1]); err != nil {
		t.Fatal(err)
	}
	if err := pull.Wait(); err != nil {
		t.Fatalf("pull: %v\n%s", err, logs.String())
	}
	t.Logf("pulled in %s with one seeder killed and one cut off for 2 s", time.Since(start).Round(time.Millisecond))
	testimage.Validate(t, dest)
}

// TestPullCatchesAPeerServingCorruptBlocks: of two seeders, one has had
// every leaf of its store (its packs) overwritten on disk, and serves those bytes as
// if they were the blocks. A pull from both completes with every blob
// verified, the bad peer caught and refused.
func TestPullCatchesAPeerServingCorruptBlocks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tb := testbed.ForTest(t, 3, testbed.Link{Rate: "100mbit"})
	layout := debianImage(t)
	honest, liar := startShoalDaemonOn(t, tb.Hosts[0]), startShoalDaemonOn(t, tb.Hosts[1])
	var root string
	for _, d := range []*shoalDaemon{honest, liar} {
		out := strings.TrimSpace(d.run(t, "push", "oci:"+layout+":bookworm"))
		root = out[strings.LastIndex(out, "\n")+1:]
	}
	testproc.Stop(liar.proc)
	// The liar keeps the layer's leaves in a pack (one file, read-only;
	// root writes it anyway); any loose leaves are corrupted too.
	corrupted := 0
	flip := func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() || fi.Size() < 256<<10 {
			return nil
		}
		data, _ := os.ReadFile(p)
		for i := range data {
			data[i] ^= 0x5a
		}
		if os.WriteFile(p, data, 0o644) == nil {
			corrupted += len(data) / (256 << 10)
		}
		return nil
	}
	filepath.Walk(filepath.Join(liar.home, "packs"), flip)
	filepath.Walk(filepath.Join(liar.home, "blocks"), flip)
	if corrupted < 100 {
		t.Fatalf("corrupted only %d leaves", corrupted)
	}
	liar.start(t)

	home, err := os.MkdirTemp("", "shoal-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(home)
	dest := filepath.Join(t.TempDir(), "oci")
	pull := tb.Hosts[2].Command(ctx, shoalBinary(t), "--home", home, "pull", root, "--to", "oci:"+dest+":bookworm",
		"--timeout", "30s", "--peer", liar.Peer, "--peer", honest.Peer)
	out, err := pull.CombinedOutput()
	if err != nil {
		t.Fatalf("pull: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "bad blocks") {
		t.Errorf("the pull did not say it caught the bad peer:\n%s", out)
	}
	testimage.Validate(t, dest)
}
