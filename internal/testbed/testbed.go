// Package testbed builds a small network of hosts on one machine for
// tests and benchmarks: N network namespaces, each joined to a bridge by
// a link whose both ends are shaped with tc (a veth pair; with delay, two
// TAP devices and a delay line in this process). It needs root, iproute2
// and nsenter (util-linux), touches nothing outside the namespaces it
// makes, removes them when closed or when its context ends, and clears
// what an interrupted run left behind.
package testbed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Link shapes every host's link to the bridge, both ways.
type Link struct {
	// Rate is tc's rate ("100mbit"); empty leaves the link unshaped.
	Rate string
	// Delay holds every frame on each end of the link this long, so that
	// the round trip between two hosts is four times Delay. It is added by
	// a delay line in this process rather than the kernel's netem, which
	// some kernels (this project's machine's among them) lack; at most 1 s.
	Delay time.Duration
	// Loss drops this percentage of the packets each host sends, at
	// random (nftables in the host's namespace; needs no netem).
	Loss float64
}

// Host is one host of the testbed.
type Host struct {
	Name string // its network namespace
	Addr string // its IPv4 address on the testbed
}

// Testbed is a running network of hosts.
type Testbed struct {
	Hosts []Host
	hub   string
	links []string // host-side veth names, in the hub
	delay time.Duration
	lines []*delayLine
	once  sync.Once
	err   error
	stop  chan struct{}
}

// prefix starts every namespace the package makes, followed by the
// process's ID, so that testbeds of several processes do not meet and a
// new one can clear what a killed process left.
const prefix = "shoaltb-"

var (
	mu    sync.Mutex // one testbed per process at a time: names repeat
	owner = prefix + strconv.Itoa(os.Getpid())
)

// New builds n hosts (at most 250) on the subnet 10.77.0.0/24. The
// testbed is closed when ctx ends, if Close has not been called before. A
// process has one testbed at a time: New waits for the last one to close.
func New(ctx context.Context, n int, link Link) (*Testbed, error) {
	if n < 1 || n > 250 {
		return nil, fmt.Errorf("testbed: %d hosts: want 1 to 250", n)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("testbed: network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, fmt.Errorf("testbed: iproute2: %w", err)
	}
	if _, err := link.qdisc(); err != nil {
		return nil, err
	}
	clearStale()
	mu.Lock()
	tb := &Testbed{hub: owner + "-hub", stop: make(chan struct{}), delay: link.Delay}
	if err := tb.build(n, link); err != nil {
		tb.Close()
		return nil, err
	}
	go func() {
		select {
		case <-ctx.Done():
			tb.Close()
		case <-tb.stop:
		}
	}()
	return tb, nil
}

func (tb *Testbed) build(n int, link Link) error {
	if err := ip("netns", "add", tb.hub); err != nil {
		return err
	}
	hub := func(args ...string) error { return ip(append([]string{"-n", tb.hub}, args...)...) }
	if err := hub("link", "add", "br0", "type", "bridge"); err != nil {
		return err
	}
	if err := hub("link", "set", "br0", "up"); err != nil {
		return err
	}
	if err := (Host{Name: tb.hub}).Do(skipBridgeFirewall); err != nil {
		return err
	}
	qdisc, err := link.qdisc()
	if err != nil {
		return err
	}
	for i := range n {
		h := Host{Name: fmt.Sprintf("%s-h%d", owner, i), Addr: fmt.Sprintf("10.77.0.%d", i+1)}
		outer, inner := fmt.Sprintf("tbh%d", i), fmt.Sprintf("tbi%d", i)
		if err := ip("netns", "add", h.Name); err != nil {
			return err
		}
		tb.Hosts = append(tb.Hosts, h) // from now on Close removes it
		if link.Delay > 0 {
			if err := tb.delayedLink(h, outer, inner, link.Delay); err != nil {
				return err
			}
		} else if err := hub("link", "add", outer, "type", "veth", "peer", "name", inner, "netns", h.Name); err != nil {
			return err
		}
		steps := [][]string{
			{"-n", tb.hub, "link", "set", outer, "master", "br0", "up"},
			{"-n", h.Name, "addr", "add", h.Addr + "/24", "dev", inner},
			{"-n", h.Name, "link", "set", inner, "up"},
			{"-n", h.Name, "link", "set", "lo", "up"},
		}
		for _, s := range steps {
			if err := ip(s...); err != nil {
				return err
			}
		}
		tb.links = append(tb.links, outer)
		if err := tb.shape(i, qdisc); err != nil {
			return err
		}
		if err := tb.lose(h, link.Loss); err != nil {
			return err
		}
	}
	return nil
}

// skipBridgeFirewall keeps the frames crossing the current namespace's
// bridges out of iptables, which br_netfilter, when some other program
// loaded it, makes every bridged frame pass: the hub only forwards, and
// on a busy testbed the hooks cost a few percent of the machine.
func skipBridgeFirewall() error {
	for _, table := range []string{"iptables", "ip6tables", "arptables"} {
		err := os.WriteFile("/proc/sys/net/bridge/bridge-nf-call-"+table, []byte("0"), 0)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("testbed: bridge firewall: %w", err)
		}
	}
	return nil
}

// delayedLink joins host h to the hub by two TAP devices, outer on the
// hub's side and inner on h's, and a delay line between them.
func (tb *Testbed) delayedLink(h Host, outer, inner string, delay time.Duration) error {
	in, err := openTAP(h.Name, inner)
	if err != nil {
		return err
	}
	out, err := openTAP(tb.hub, outer)
	if err != nil {
		in.Close()
		return err
	}
	tb.lines = append(tb.lines, newDelayLine(in, out, delay))
	// TCP sizes the packets it hands the device to about a millisecond of
	// its pacing rate, a dozen segments or fewer at 100 Mbit/s; asking for
	// at least 16 leaves the line fewer frames to carry. tbf still shapes
	// every byte.
	return h.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/tcp_min_tso_segs", []byte("16"), 0)
	})
}

// Shape gives host's link a shape of its own, both ways: a faster puller
// among slower seeders, say. The delay is the testbed's, set by New.
func (tb *Testbed) Shape(host Host, link Link) error {
	qdisc, err := link.qdisc()
	if err != nil {
		return err
	}
	if link.Delay != tb.delay {
		return fmt.Errorf("testbed: delay %s: every link has the testbed's, %s", link.Delay, tb.delay)
	}
	for i, h := range tb.Hosts {
		if h == host {
			if err := tb.shape(i, qdisc); err != nil {
				return err
			}
			return tb.lose(host, link.Loss)
		}
	}
	return fmt.Errorf("testbed: no host %s", host.Name)
}

// shape replaces the qdisc of host i's veth pair with qdisc (nil: none).
func (tb *Testbed) shape(i int, qdisc []string) error {
	sides := [][2]string{{tb.hub, tb.links[i]}, {tb.Hosts[i].Name, fmt.Sprintf("tbi%d", i)}}
	for _, side := range sides {
		// Deleting a root qdisc that is not there fails harmlessly.
		_ = exec.Command("ip", "netns", "exec", side[0], "tc", "qdisc", "del", "dev", side[1], "root").Run()
		if qdisc == nil {
			continue
		}
		args := append([]string{"netns", "exec", side[0], "tc", "qdisc", "add", "dev", side[1], "root"}, qdisc...)
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("testbed: tc %v: %v: %s", qdisc, err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// qdisc is the tc qdisc that shapes a link's rate (tbf), nil for none;
// it also checks the rest of the link.
func (l Link) qdisc() ([]string, error) {
	if l.Loss < 0 || l.Loss >= 100 {
		return nil, fmt.Errorf("testbed: loss %v%%: want 0 to 100", l.Loss)
	}
	if l.Delay < 0 || l.Delay > time.Second {
		return nil, fmt.Errorf("testbed: delay %s: want 0 to 1s", l.Delay)
	}
	if l.Rate == "" {
		return nil, nil
	}
	return []string{"tbf", "rate", l.Rate, "burst", "64kb", "latency", "50ms"}, nil
}

// lose makes host drop loss percent of the packets it sends, in steps of
// a hundredth of a percent; 0 drops none.
func (tb *Testbed) lose(host Host, loss float64) error {
	nft := func(args ...string) error {
		out, err := exec.Command("ip", append([]string{"netns", "exec", host.Name, "nft"}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("testbed: nft %v: %v: %s", args, err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	_ = nft("delete", "table", "inet", "testbed") // none yet: fails harmlessly
	if loss == 0 {
		return nil
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return fmt.Errorf("testbed: loss needs nftables: %w", err)
	}
	steps := strconv.Itoa(int(loss * 100))
	for _, args := range [][]string{
		{"add", "table", "inet", "testbed"},
		{"add", "chain", "inet", "testbed", "loss", "{ type filter hook output priority 0; }"},
		{"add", "rule", "inet", "testbed", "loss", "numgen", "random", "mod", "10000", "<", steps, "counter", "drop"},
	} {
		if err := nft(args...); err != nil {
			return err
		}
	}
	return nil
}

// Dropped counts the packets host's loss rule has dropped.
func (tb *Testbed) Dropped(host Host) (uint64, error) {
	out, err := exec.Command("ip", "netns", "exec", host.Name, "nft", "list", "chain", "inet", "testbed", "loss").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("testbed: nft list: %v: %s", err, strings.TrimSpace(string(out)))
	}
	f := strings.Fields(string(out))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "packets" {
			return strconv.ParseUint(f[i+1], 10, 64)
		}
	}
	return 0, errors.New("testbed: no counter in the loss rule")
}

// Command runs name in host's network namespace, and only there: unlike
// `ip netns exec`, it keeps the machine's mount namespace, so what the
// command mounts (FUSE, a container's root) the rest of the machine sees.
func (h Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	argv := h.Argv(name, args...)
	return exec.CommandContext(ctx, argv[0], argv[1:]...)
}

// Argv is the command line that runs name with args as Command does.
func (h Host) Argv(name string, args ...string) []string {
	return append([]string{"nsenter", "--net=/run/netns/" + h.Name, "--", name}, args...)
}

// Do runs f with its calling goroutine in host's network namespace:
// sockets f opens on that goroutine (a listener, a dial) stay in that
// namespace after it returns.
func (host Host) Do(f func() error) error {
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer self.Close()
	target, err := os.Open("/run/netns/" + host.Name)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("testbed: enter %s: %w", host.Name, err)
	}
	ferr := f()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays locked, so that Go retires it with the
		// goroutine rather than reuse it in the wrong namespace.
		return errors.Join(ferr, fmt.Errorf("testbed: leave %s: %w", host.Name, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// Sent is how many bytes host has sent onto the testbed so far (what its
// link carried from it, headers included).
func (tb *Testbed) Sent(host Host) (uint64, error) {
	for i, h := range tb.Hosts {
		if h.Name != host.Name {
			continue
		}
		out, err := exec.Command("ip", "-n", tb.hub, "-s", "-j", "link", "show", "dev", tb.links[i]).Output()
		if err != nil {
			return 0, fmt.Errorf("testbed: link of %s: %w", host.Name, err)
		}
		var links []struct {
			Stats struct {
				RX struct{ Bytes uint64 } `json:"rx"`
			} `json:"stats64"`
		}
		if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
			return 0, fmt.Errorf("testbed: link of %s: %q: %v", host.Name, out, err)
		}
		// The bridge's side receives what the host sends.
		return links[0].Stats.RX.Bytes, nil
	}
	return 0, fmt.Errorf("testbed: no host %s", host.Name)
}

// Cut takes host off the network (its link goes down) until Heal.
func (tb *Testbed) Cut(host Host) error { return tb.setLink(host, "down") }

// Heal puts host back on the network, returning once both ends of its
// link are up again (a loaded machine takes a moment).
func (tb *Testbed) Heal(host Host) error {
	if err := tb.setLink(host, "up"); err != nil {
		return err
	}
	i := slices.IndexFunc(tb.Hosts, func(h Host) bool { return h.Name == host.Name })
	ends := [][2]string{{tb.hub, tb.links[i]}, {host.Name, fmt.Sprintf("tbi%d", i)}}
	deadline := time.Now().Add(10 * time.Second)
	for _, end := range ends {
		for {
			out, err := exec.Command("ip", "-n", end[0], "-o", "link", "show", "dev", end[1]).Output()
			// Up with a carrier (a TAP device's state stays UNKNOWN).
			if err == nil && strings.Contains(string(out), "UP,LOWER_UP") {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("testbed: %s of %s is not up again: %v %s", end[1], end[0], err, out)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

func (tb *Testbed) setLink(host Host, state string) error {
	for i, h := range tb.Hosts {
		if h.Name == host.Name {
			return ip("-n", tb.hub, "link", "set", tb.links[i], state)
		}
	}
	return fmt.Errorf("testbed: no host %s", host.Name)
}

// Close removes the hosts and the bridge; their links go with them.
// Processes still running in them lose their network.
func (tb *Testbed) Close() error {
	tb.once.Do(func() {
		close(tb.stop)
		var errs []error
		for _, l := range tb.lines {
			errs = append(errs, l.close())
		}
		for _, h := range tb.Hosts {
			errs = append(errs, ip("netns", "del", h.Name))
		}
		errs = append(errs, ip("netns", "del", tb.hub))
		tb.err = errors.Join(errs...)
		mu.Unlock()
	})
	return tb.err
}

// clearStale removes the namespaces of testbeds whose process died.
func clearStale() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], prefix) {
			continue
		}
		pid, _, _ := strings.Cut(strings.TrimPrefix(f[0], prefix), "-")
		if _, err := os.Stat("/proc/" + pid); errors.Is(err, os.ErrNotExist) {
			_ = ip("netns", "del", f[0])
		}
	}
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("testbed: ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
