// Package plot draws line charts as PNG images, for benchmarks that show
// how what they measure moves with a parameter (time against nodes, say).
package plot

import (
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"strconv"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Series is one line: its points, X ascending.
type Series struct {
	Name string
	X, Y []float64
}

// Chart is a line chart of one or more series on shared axes; Y starts at 0.
type Chart struct {
	Title, XLabel, YLabel string
	Series                []Series
}

const (
	width, height = 800, 500
	left, right   = 80, 30 // margins around the plot area
	top, bottom   = 50, 60
)

// Palette colours the series in turn.
var Palette = []color.RGBA{
	{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, // blue
	{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, // red
	{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, // green
	{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}, // orange
}

var (
	ink  = color.RGBA{A: 0xff}
	grid = color.RGBA{R: 0xdd, G: 0xdd, B: 0xdd, A: 0xff}
)

// WritePNG draws c and writes it to w as a PNG.
func (c Chart) WritePNG(w io.Writer) error {
	img, err := c.Draw()
	if err != nil {
		return err
	}
	return png.Encode(w, img)
}

// Draw draws c.
func (c Chart) Draw() (*image.RGBA, error) {
	if len(c.Series) == 0 || len(c.Series) > len(Palette) {
		return nil, fmt.Errorf("plot: %d series; 1 to %d are drawn", len(c.Series), len(Palette))
	}
	xmin, xmax, ymax := math.Inf(1), math.Inf(-1), 0.0
	for _, s := range c.Series {
		if len(s.X) == 0 || len(s.X) != len(s.Y) {
			return nil, fmt.Errorf("plot: series %q has %d x and %d y", s.Name, len(s.X), len(s.Y))
		}
		for i := range s.X {
			if math.IsNaN(s.X[i]) || math.IsNaN(s.Y[i]) || math.IsInf(s.Y[i], 0) || s.Y[i] < 0 {
				return nil, fmt.Errorf("plot: series %q: point (%v, %v)", s.Name, s.X[i], s.Y[i])
			}
			xmin, xmax, ymax = min(xmin, s.X[i]), max(xmax, s.X[i]), max(ymax, s.Y[i])
		}
	}
	if xmax == xmin {
		xmax = xmin + 1
	}
	step := niceStep(ymax / 5)
	ytop := step * math.Ceil(ymax/step)
	if ytop == 0 {
		return nil, errors.New("plot: every y is 0")
	}

	img := image.NewRGBA(image.Rect(0, 0, width, height))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	px := func(x float64) int { return left + int(math.Round((x-xmin)/(xmax-xmin)*float64(width-left-right))) }
	py := func(y float64) int { return height - bottom - int(math.Round(y/ytop*float64(height-top-bottom))) }

	for y := 0.0; y <= ytop+step/2; y += step {
		line(img, left, py(y), width-right, py(y), grid, 1)
		label := strconv.FormatFloat(y, 'f', -1, 64)
		text(img, left-8-textWidth(label), py(y)+4, label)
	}
	ticks := map[float64]bool{}
	for _, s := range c.Series {
		for _, x := range s.X {
			if !ticks[x] {
				ticks[x] = true
				line(img, px(x), height-bottom, px(x), height-bottom+5, ink, 1)
				label := strconv.FormatFloat(x, 'f', -1, 64)
				text(img, px(x)-textWidth(label)/2, height-bottom+18, label)
			}
		}
	}
	line(img, left, top, left, height-bottom, ink, 1)
	line(img, left, height-bottom, width-right, height-bottom, ink, 1)
	text(img, (width-textWidth(c.Title))/2, top-20, c.Title)
	text(img, left+(width-left-right-textWidth(c.XLabel))/2, height-15, c.XLabel)
	text(img, 8, top-20, c.YLabel)

	for i, s := range c.Series {
		col := Palette[i]
		for k := range s.X {
			if k > 0 {
				line(img, px(s.X[k-1]), py(s.Y[k-1]), px(s.X[k]), py(s.Y[k]), col, 3)
			}
			square(img, px(s.X[k]), py(s.Y[k]), 4, col)
		}
		// The legend, top left of the plot area.
		ly := top + 18 + 18*i
		line(img, left+15, ly-4, left+40, ly-4, col, 3)
		text(img, left+48, ly, s.Name)
	}
	return img, nil
}

// niceStep is the smallest of 1, 2 and 5 times a power of ten at least v.
func niceStep(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

var face = basicfont.Face7x13

func textWidth(s string) int { return font.MeasureString(face, s).Round() }

func text(img *image.RGBA, x, y int, s string) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(ink), Face: face, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

// line draws from (x0, y0) to (x1, y1), thick pixels wide.
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA, thick int) {
	steps := max(abs(x1-x0), abs(y1-y0), 1)
	for i := 0; i <= steps; i++ {
		x := x0 + (x1-x0)*i/steps
		y := y0 + (y1-y0)*i/steps
		square(img, x, y, thick/2, c)
	}
}

// square fills the square of half-side r around (x, y).
func square(img *image.RGBA, x, y, r int, c color.RGBA) {
	for dy := -r; dy <= r; dy++ {
		for dx := -r; dx <= r; dx++ {
			img.SetRGBA(x+dx, y+dy, c)
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
