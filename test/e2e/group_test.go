package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ipfs/shoal/internal/testbed"
	"github.com/shoal-ipfs/shoal/internal/testimage"
	"github.com/shoal-ipfs/shoal/internal/testproc"
)

type groupStatus struct {
	Chunks, Covered, Replicated, Replicas int
	Members                               []struct {
		Peer  string
		Share float64
		Error string
	}
}

// TestGroupShardsTheImageAndServesItWithoutTheOrigin is the talk's
// picture: three daemons in a group, each behind a 100 Mbit/s link, shard
// the Debian image with one replica, so each keeps about a third of it.
// The origin that pushed it goes away, and a fourth host that reaches only
// the three pulls the whole image, every blob verified. The members share
// a group key.
func TestGroupShardsTheImageAndServesItWithoutTheOrigin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tb := testbed.ForTest(t, 5, testbed.Link{Rate: "100mbit"})
	layout := debianImage(t)
	origin := startShoalDaemonOn(t, tb.Hosts[0])
	out := strings.TrimSpace(origin.run(t, "push", "oci:"+layout+":bookworm"))
	root := out[strings.LastIndex(out, "\n")+1:]
	if msg, err := origin.command("shard", root).CombinedOutput(); err == nil || !strings.Contains(string(msg), "--group") {
		t.Errorf("shard on a daemon in no group: %v, %s", err, msg)
	}

	// Every member holds the same group key; the origin, which has none,
	// is no member.
	key := origin.run(t, "group", "key")
	var members []*shoalDaemon
	for _, h := range tb.Hosts[1:4] {
		args := []string{"--group", "talk", "--peer", origin.Peer}
		if len(members) > 0 {
			args = append(args, "--peer", members[len(members)-1].Peer) // the third meets the first through the second
		}
		d := newShoalHome(t, "/ip4/"+h.Addr+"/tcp/4051", args)
		if err := os.WriteFile(filepath.Join(d.home, "group.key"), []byte(key), 0o600); err != nil {
			t.Fatal(err)
		}
		d.host = &h
		d.start(t)
		members = append(members, d)
	}
	members[0].run(t, "shard", root, "--replicas", "1")

	var st groupStatus
	deadline := time.Now().Add(3 * time.Minute)
	for {
		out, err := members[2].command("status", root, "--json").Output()
		if err == nil && json.Unmarshal(out, &st) == nil && len(st.Members) == 3 && st.Covered == st.Chunks && st.Replicated == st.Chunks {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the image never spread over the three members: %+v, %v\n%s", st, err, members[2].logs.String())
		}
		time.Sleep(time.Second)
	}
	for _, m := range st.Members {
		if m.Share < 0.2 || m.Share > 0.5 {
			t.Errorf("member %s keeps %.2f of the image, want about a third", m.Peer, m.Share)
		}
	}
	t.Logf("shares:\n%s", members[0].run(t, "status", root))

	testproc.Stop(origin.proc)
	home, err := os.MkdirTemp("", "shoal-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(home)
	dest := filepath.Join(t.TempDir(), "oci")
	args := []string{"--home", home, "pull", root, "--to", "oci:" + dest + ":bookworm", "--timeout", "30s"}
	for _, m := range members {
		args = append(args, "--peer", m.Peer)
	}
	start := time.Now()
	if out, err := tb.Hosts[4].Command(ctx, shoalBinary(t), args...).CombinedOutput(); err != nil {
		t.Fatalf("pull from the members alone: %v\n%s", err, out)
	}
	t.Logf("pulled from three members holding a third each in %s", time.Since(start).Round(time.Millisecond))
	testimage.Validate(t, dest)
}
