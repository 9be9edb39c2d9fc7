package progress

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ipfs/shoal/internal/testenv"
	"golang.org/x/sys/unix"
)

func TestNoBarsOffTerminal(t *testing.T) {
	var buf bytes.Buffer
	if New(&buf, "x") != nil {
		t.Fatal("a bar on a buffer")
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := New(f, "x")
	if b != nil {
		t.Fatal("a bar on a regular file")
	}
	// A nil bar is a valid no-op.
	b.AddTotal(10)
	b.Add(5)
	b.Done()
	if fi, _ := f.Stat(); fi.Size() != 0 {
		t.Fatal("wrote to a file that is not a terminal")
	}
}

// openPTY opens a new pseudo-terminal, which reports a size of 0x0 until
// someone sets one.
func openPTY(t *testing.T) (control, term *os.File) {
	t.Helper()
	control, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	testenv.Need(t, "a pseudo-terminal", err)
	t.Cleanup(func() { control.Close() })
	fd := int(control.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	term, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { term.Close() })
	return control, term
}

// On a terminal that reports no size, the bar is drawn all the same, and
// each frame shows the bytes done so far: the bar moves with them.
func TestBarMovesOnATerminalOfNoSize(t *testing.T) {
	control, term := openPTY(t)
	if ws, err := unix.IoctlGetWinsize(int(term.Fd()), unix.TIOCGWINSZ); err != nil || ws.Col != 0 {
		t.Fatalf("a new terminal of %+v, %v; want no size", ws, err)
	}
	var mu sync.Mutex
	var drawn strings.Builder
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := control.Read(buf)
			mu.Lock()
			drawn.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	waitFor := func(s string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			mu.Lock()
			ok := strings.Contains(drawn.String(), s)
			mu.Unlock()
			if ok {
				return
			}
			if time.Now().After(deadline) {
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("no frame showed %q in 10 s; drawn: %q", s, drawn.String())
			}
		}
	}
	b := New(term, "pull")
	if b == nil {
		t.Fatal("no bar on a terminal")
	}
	b.AddTotal(80 << 20)
	for i := 1; i <= 4; i++ {
		b.Add(20 << 20)
		waitFor(fmt.Sprintf("%d.0 MiB / 80.0 MiB", 20*i))
	}
	b.Done()
}
