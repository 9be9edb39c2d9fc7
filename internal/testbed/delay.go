package testbed

import (
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// A link with delay is two TAP devices rather than a veth pair: one in
// the host's namespace, one on the hub's bridge, with this process
// carrying each frame from one to the other after the delay. The kernel's
// delay qdisc (netem) is missing on some machines, this project's among
// them; tc still shapes the rate on both devices, nftables the loss.

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
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("testbed: TAP device %s: %w", name, err)
		}
		f = os.NewFile(uintptr(fd), name)
		return nil
	})
	return f, err
}

// delayLine carries frames both ways between two TAP devices, each frame
// delay after it was sent, until close.
type delayLine struct {
	ends [2]*os.File
	wg   sync.WaitGroup
}

// maxInFlight bounds the frames on their way in one direction; beyond it
// frames are dropped, as a full queue drops them. At 1 Gbit/s and 100 ms
// about 8,300 full frames are in flight.
const maxInFlight = 16384

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

// frameSize fits any frame a TAP device without offloads passes: the
// MTU (1500) and the Ethernet header.
const frameSize = 2048

// carry reads frames from src and writes each to dst delay later.
func (d *delayLine) carry(src, dst *os.File, delay time.Duration) {
	queue := make(chan frame, maxInFlight)
	free := make(chan []byte, maxInFlight)
	d.wg.Go(func() {
		defer close(queue)
		for {
			var buf []byte
			select {
			case buf = <-free:
			default:
				buf = make([]byte, frameSize)
			}
			n, err := src.Read(buf[:cap(buf)])
			if err != nil {
				return // closed
			}
			select {
			case queue <- frame{due: time.Now().Add(delay), data: buf[:n]}:
			default: // the line is full: the frame is lost
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
				select {
				case free <- f.data:
				default:
				}
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
