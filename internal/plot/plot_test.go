package plot

import (
	"bytes"
	"image/png"
	"math"
	"testing"
)

// The chart decodes as a PNG of its size, each series drawn in its
// colour, and a point lands where its value puts it.
func TestChartDrawsEachSeries(t *testing.T) {
	c := Chart{Title: "time until all N nodes have the image", XLabel: "N", YLabel: "seconds", Series: []Series{
		{Name: "shoal", X: []float64{1, 2, 4, 8}, Y: []float64{9.8, 10.8, 11.7, 18.7}},
		{Name: "registry", X: []float64{1, 2, 4, 8}, Y: []float64{8.6, 17.0, 32.7, 64.6}},
	}}
	var buf bytes.Buffer
	if err := c.WritePNG(&buf); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != width || b.Dy() != height {
		t.Fatalf("size %v", b)
	}
	count := map[[3]uint32]int{}
	for y := 0; y < height; y++ {
		for x := 0; x < width; x++ {
			r, g, b, _ := img.At(x, y).RGBA()
			count[[3]uint32{r >> 8, g >> 8, b >> 8}]++
		}
	}
	for i, s := range c.Series {
		p := Palette[i]
		if count[[3]uint32{uint32(p.R), uint32(p.G), uint32(p.B)}] < 500 {
			t.Errorf("series %s is hardly drawn", s.Name)
		}
	}
	// The registry's last point, 64.6 s at N = 8, at the right end: the
	// y axis goes in steps of 20 (64.6/5 rounded up to 1, 2 or 5 times a
	// power of ten) to 80.
	last := 64.6
	x, y := width-right, height-bottom-int(math.Round(last/80*float64(height-top-bottom)))
	if r, g, b, _ := img.At(x, y).RGBA(); r>>8 != uint32(Palette[1].R) || g>>8 != uint32(Palette[1].G) || b>>8 != uint32(Palette[1].B) {
		t.Errorf("no red at the registry's last point (%d, %d)", x, y)
	}
}

func TestChartRefusesWhatItCannotDraw(t *testing.T) {
	for name, c := range map[string]Chart{
		"no series":   {},
		"uneven":      {Series: []Series{{X: []float64{1, 2}, Y: []float64{1}}}},
		"negative":    {Series: []Series{{X: []float64{1}, Y: []float64{-1}}}},
		"all zero":    {Series: []Series{{X: []float64{1, 2}, Y: []float64{0, 0}}}},
		"five series": {Series: make([]Series, 5)},
	} {
		if _, err := c.Draw(); err == nil {
			t.Errorf("%s: drawn", name)
		}
	}
}
