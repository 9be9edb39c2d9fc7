// Package progress draws byte progress bars on a terminal and nothing
// anywhere else.
package progress

import (
	"io"
	"os"
	"sync/atomic"

	"github.com/vbauerster/cupwriter"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"
)

// Bar counts bytes against a total that may grow as work is discovered.
type Bar struct {
	p     *mpb.Progress
	bar   *mpb.Bar
	total atomic.Int64
}

// New returns a bar drawn on w when w is a terminal, else nil. A nil *Bar
// is a valid no-op.
func New(w io.Writer, name string) *Bar {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	p := mpb.New(mpb.WithConsoleWriter(sizedWriter{cupwriter.New(f, false)}), mpb.WithWidth(40))
	bar := p.AddBar(0,
		mpb.PrependDecorators(
			decor.Name(name, decor.WC{W: len(name) + 1, C: decor.DindentRight}),
			decor.Counters(decor.SizeB1024(0), "% .1f / % .1f"),
		),
		mpb.AppendDecorators(
			decor.AverageSpeed(decor.SizeB1024(0), "% .1f"),
			decor.Name(" ETA "),
			decor.AverageETA(decor.ET_STYLE_GO),
		),
	)
	return &Bar{p: p, bar: bar}
}

// sizedWriter writes frames to a terminal that may not know its size (a
// new pseudo-terminal reports 0x0, as some CI runners' and serial
// consoles do): the bar library draws nothing in no columns, so it gets
// the classic 80x24 instead.
type sizedWriter struct{ *cupwriter.Writer }

func (w sizedWriter) GetTermSize() (width, height int, err error) {
	width, height, err = w.Writer.GetTermSize()
	if err != nil || width <= 0 || height <= 0 {
		return 80, 24, nil
	}
	return width, height, nil
}

// AddTotal grows the total by n bytes.
func (b *Bar) AddTotal(n int64) {
	if b == nil {
		return
	}
	b.bar.SetTotal(b.total.Add(n), false)
}

// Add records n bytes done.
func (b *Bar) Add(n int64) {
	if b == nil || n <= 0 {
		return
	}
	b.bar.IncrInt64(n)
}

// Done completes the bar and waits for its last frame.
func (b *Bar) Done() {
	if b == nil {
		return
	}
	b.bar.SetTotal(b.total.Load(), true)
	b.p.Wait()
}
