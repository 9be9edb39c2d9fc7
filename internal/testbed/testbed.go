// Package testbed builds a small network of hosts on one machine for
// tests and benchmarks: N network namespaces, each with one TAP device,
// and a switch in this process that carries frames between them with the
// links' delay and rates (tbf shapes what a host sends, tc's own way).
// It needs root, iproute2, tc and nsenter (util-linux), touches nothing
// outside the namespaces it makes, removes them when closed or when its
// context ends, and clears what an interrupted run left behind.
package testbed

import (
	"context"
	"errors"
	"fmt"
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

// Link shapes every host's link to the switch, both ways.
type Link struct {
	// Rate is tc's rate ("100mbit"), in bits or bytes a second; empty
	// leaves the link unshaped.
	Rate string
	// Delay holds every frame on each end of the link this long, so that
	// the round trip between two hosts is four times Delay. The switch
	// adds it rather than the kernel's netem, which some kernels (this
	// project's machine's among them) lack; at most 1 s.
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
	delay time.Duration
	sw    fabric
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
	if _, err := link.rate(); err != nil {
		return nil, err
	}
	clearStale()
	mu.Lock()
	// Each end of a path holds a frame Delay, as the link's doc says.
	tb := &Testbed{stop: make(chan struct{}), delay: link.Delay, sw: fabric{delay: 2 * link.Delay}}
	if err := tb.build(n, link); err != nil {
		tb.Close()
		return nil, err
	}
	tb.sw.start()
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
	for i := range n {
		h := Host{Name: fmt.Sprintf("%s-h%d", owner, i), Addr: fmt.Sprintf("10.77.0.%d", i+1)}
		if err := ip("netns", "add", h.Name); err != nil {
			return err
		}
		tb.Hosts = append(tb.Hosts, h) // from now on Close removes it
		dev, err := openTAP(h.Name, device)
		if err != nil {
			return err
		}
		tb.sw.ports = append(tb.sw.ports, &port{dev: dev})
		steps := [][]string{
			{"-n", h.Name, "link", "set", "dev", device, "address", hostMAC(i)},
			{"-n", h.Name, "addr", "add", h.Addr + "/24", "dev", device},
			{"-n", h.Name, "link", "set", device, "up"},
			{"-n", h.Name, "link", "set", "lo", "up"},
		}
		for _, s := range steps {
			if err := ip(s...); err != nil {
				return err
			}
		}
		// TCP sizes the packets it hands the device to about a millisecond
		// of its pacing rate, a dozen segments or fewer at 100 Mbit/s;
		// asking for at least 16 leaves the switch fewer frames to carry.
		// tbf and the switch still shape every byte.
		if err := h.Do(func() error {
			return os.WriteFile("/proc/sys/net/ipv4/tcp_min_tso_segs", []byte("16"), 0)
		}); err != nil {
			return err
		}
		if err := tb.shape(i, link); err != nil {
			return err
		}
	}
	return nil
}

// device is every host's TAP device, its one link to the switch.
const device = "tb0"

// Shape gives host's link a shape of its own, both ways: a faster puller
// among slower seeders, say. The delay is the testbed's, set by New.
func (tb *Testbed) Shape(host Host, link Link) error {
	if link.Delay != tb.delay {
		return fmt.Errorf("testbed: delay %s: every link has the testbed's, %s", link.Delay, tb.delay)
	}
	i, err := tb.index(host)
	if err != nil {
		return err
	}
	return tb.shape(i, link)
}

// shape sets host i's rate both ways (tbf on the way out, the switch on
// the way in) and its loss.
func (tb *Testbed) shape(i int, link Link) error {
	rate, err := link.rate()
	if err != nil {
		return err
	}
	h := tb.Hosts[i]
	// Deleting a root qdisc that is not there fails harmlessly.
	_ = exec.Command("ip", "netns", "exec", h.Name, "tc", "qdisc", "del", "dev", device, "root").Run()
	if rate > 0 {
		args := []string{"netns", "exec", h.Name, "tc", "qdisc", "add", "dev", device, "root", "tbf", "rate", link.Rate, "burst", strconv.Itoa(burst), "latency", queueLimit.String()}
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("testbed: tc %v: %v: %s", args[4:], err, strings.TrimSpace(string(out)))
		}
	}
	tb.sw.ports[i].rate.Store(rate)
	return tb.lose(h, link.Loss)
}

// rate is the link's rate in bits a second, 0 for none; it also checks
// the rest of the link.
func (l Link) rate() (int64, error) {
	if l.Loss < 0 || l.Loss >= 100 {
		return 0, fmt.Errorf("testbed: loss %v%%: want 0 to 100", l.Loss)
	}
	if l.Delay < 0 || l.Delay > time.Second {
		return 0, fmt.Errorf("testbed: delay %s: want 0 to 1s", l.Delay)
	}
	if l.Rate == "" {
		return 0, nil
	}
	// tc's units, longest suffix first so that "bit" does not take
	// "mbit"'s place; a bare number is bits.
	units := []struct {
		suffix string
		bits   float64
	}{
		{"tibit", 1 << 40}, {"gibit", 1 << 30}, {"mibit", 1 << 20}, {"kibit", 1 << 10},
		{"tibps", 8 << 40}, {"gibps", 8 << 30}, {"mibps", 8 << 20}, {"kibps", 8 << 10},
		{"tbit", 1e12}, {"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1},
		{"tbps", 8e12}, {"gbps", 8e9}, {"mbps", 8e6}, {"kbps", 8e3}, {"bps", 8},
		{"", 1},
	}
	lower := strings.ToLower(l.Rate)
	for _, u := range units {
		if num, ok := strings.CutSuffix(lower, u.suffix); ok {
			v, err := strconv.ParseFloat(num, 64)
			if err != nil || v <= 0 || v*u.bits < 8 || v*u.bits > 1e13 {
				break
			}
			return int64(v * u.bits), nil
		}
	}
	return 0, fmt.Errorf("testbed: rate %q: want tc's form, such as 100mbit", l.Rate)
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

// Sent is how many bytes host has sent onto the testbed so far (the
// frames the switch took from it, headers included).
func (tb *Testbed) Sent(host Host) (uint64, error) {
	i, err := tb.index(host)
	if err != nil {
		return 0, err
	}
	return tb.sw.ports[i].sent.Load(), nil
}

// Cut takes host off the network until Heal: the switch drops what it
// sends and what is sent to it, as if its cable were pulled.
func (tb *Testbed) Cut(host Host) error { return tb.plug(host, false) }

// Heal puts host back on the network.
func (tb *Testbed) Heal(host Host) error { return tb.plug(host, true) }

func (tb *Testbed) plug(host Host, in bool) error {
	i, err := tb.index(host)
	if err != nil {
		return err
	}
	tb.sw.ports[i].cut.Store(!in)
	return nil
}

func (tb *Testbed) index(host Host) (int, error) {
	i := slices.IndexFunc(tb.Hosts, func(h Host) bool { return h.Name == host.Name })
	if i < 0 || i >= len(tb.sw.ports) {
		return 0, fmt.Errorf("testbed: no host %s", host.Name)
	}
	return i, nil
}

// Close removes the hosts; their devices go with them. Processes still
// running in them lose their network.
func (tb *Testbed) Close() error {
	tb.once.Do(func() {
		close(tb.stop)
		errs := []error{tb.sw.close()}
		for _, h := range tb.Hosts {
			errs = append(errs, ip("netns", "del", h.Name))
		}
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
