package testbed

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// A link with delay is two TAP devices rather than a veth pair: one in
// the host's namespace, one on the hub's bridge, with this process
// carrying each frame from one to the other after the delay. The kernel's
// delay qdisc (netem) is missing on some machines, this project's among
// them; tc still shapes the rate on both devices, nftables the loss.
//
// The devices take segmentation offloads, as a virtual machine's NIC
// does: a TCP sender hands the device one packet of up to gsoMaxSize
// bytes (a virtio header says how to cut it), the line carries it whole,
// and the receiving stack takes it as one, as it would after GRO. Frames
// of the MTU cost the line two system calls each, and on two cores nine
// busy links at 100 Mbit/s spent a third of the machine on them.

// Flags of TUNSETOFFLOAD (linux/if_tun.h), not in x/sys/unix.
const (
	tunOffloadCsum = 0x01
	tunOffloadTSO4 = 0x02
	tunOffloadTSO6 = 0x04
	tunOffloadUSO4 = 0x20 // Linux 6.2 and later
	tunOffloadUSO6 = 0x40
)

// gsoMaxSize caps the packets a sender hands a device: tbf cuts a packet
// larger than its burst (64 KiB, with the headers of every segment
// counted) back into frames of the MTU.
const gsoMaxSize = 32 << 10

// vnetHeaderSize is the virtio_net_hdr in front of every frame read from
// or written to a device opened with IFF_VNET_HDR.
const vnetHeaderSize = 10

// openTAP makes a TAP device called name in network namespace ns and
// returns the file its frames are read from and written to. The file is
// non-blocking, so that closing it ends a read in progress.
func openTAP(ns, name string) (*os.File, error) {
	var f *os.File
	err := Host{Name: ns}.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("testbed: /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("testbed: TAP device %s: %w", name, err)
		}
		offloads := tunOffloadCsum | tunOffloadTSO4 | tunOffloadTSO6
		if unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, offloads|tunOffloadUSO4|tunOffloadUSO6) != nil {
			if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, offloads); err != nil {
				unix.Close(fd)
				return fmt.Errorf("testbed: offloads of TAP device %s: %w", name, err)
			}
		}
		f = os.NewFile(uintptr(fd), name)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := ip("-n", ns, "link", "set", "dev", name, "gso_max_size", strconv.Itoa(gsoMaxSize)); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// delayLine carries frames both ways between two TAP devices, each frame
// delay after it was sent, until close.
type delayLine struct {
	ends [2]*os.File
	wg   sync.WaitGroup
}

// maxInFlight bounds the bytes on their way in one direction; beyond it
// frames are dropped, as a full queue drops them. At 1 Gbit/s and 100 ms
// 12.5 MB are in flight.
const maxInFlight = 32 << 20

func newDelayLine(a, b *os.File, delay time.Duration) *delayLine {
	d := &delayLine{ends: [2]*os.File{a, b}}
	d.carry(a, b, delay)
	d.carry(b, a, delay)
	return d
}

type frame struct {
	due  time.Time
	data []byte
}

// early is how much before its time a frame may leave, so that a burst
// of frames leaves on one wakeup rather than one each: the line costs a
// few microseconds of CPU a frame, and nine links at 100 Mbit/s carry
// tens of thousands of frames a second on this project's two cores.
const early = 250 * time.Microsecond

// Frames are read into a buffer that fits the largest (a virtio header,
// an Ethernet header and a packet of up to 64 KiB), then copied into one
// of two sizes: most frames are acknowledgements.
const (
	maxFrame   = vnetHeaderSize + 14 + 64<<10
	smallFrame = 2048
)

// carry reads frames from src and writes each to dst delay later.
func (d *delayLine) carry(src, dst *os.File, delay time.Duration) {
	queue := make(chan frame, 1<<16)
	var inFlight atomic.Int64
	small, large := make(chan []byte, 4096), make(chan []byte, 512)
	buffer := func(n int) []byte {
		pool, size := small, smallFrame
		if n > smallFrame {
			pool, size = large, maxFrame
		}
		select {
		case b := <-pool:
			return b[:n]
		default:
			return make([]byte, n, size)
		}
	}
	release := func(b []byte) {
		pool := small
		if cap(b) > smallFrame {
			pool = large
		}
		select {
		case pool <- b:
		default:
		}
	}
	d.wg.Go(func() {
		defer close(queue)
		read := make([]byte, maxFrame)
		for {
			n, err := src.Read(read)
			if err != nil {
				return // closed
			}
			if inFlight.Load()+int64(n) > maxInFlight {
				continue // the line is full: the frame is lost
			}
			data := buffer(n)
			copy(data, read[:n])
			select {
			case queue <- frame{due: time.Now().Add(delay), data: data}:
				inFlight.Add(int64(n))
			default: // the line is full: the frame is lost
				release(data)
			}
		}
	})
	d.wg.Go(func() {
		for f := range queue {
			if wait := time.Until(f.due); wait > early {
				time.Sleep(wait - early)
			}
			for {
				// A device that is down (Cut) refuses the frame: it is lost.
				_, _ = dst.Write(f.data)
				inFlight.Add(-int64(len(f.data)))
				release(f.data)
				var ok bool
				select {
				case f, ok = <-queue:
				default:
				}
				if !ok {
					break
				}
				if wait := time.Until(f.due); wait > early {
					time.Sleep(wait - early)
				}
			}
		}
	})
}

// close stops the line and closes its devices' files, which removes the
// devices.
func (d *delayLine) close() error {
	err := d.ends[0].Close()
	if err2 := d.ends[1].Close(); err == nil {
		err = err2
	}
	d.wg.Wait()
	return err
}
