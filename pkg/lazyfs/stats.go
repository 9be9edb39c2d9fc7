package lazyfs

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/shoal-ipfs/shoal/pkg/layerindex"
)

// Stats count what a mount served and what it cost to fetch.
type Stats struct {
	layerindex.Stats
	Reads, ReadBytes, ReadErrors atomic.Int64
	ImageBytes, IndexBytes       atomic.Int64 // the layers' sizes; their indexes' sizes
	// CacheOpens counts opens served from the file cache, whose reads
	// the kernel may pass to the copy without the mount seeing them;
	// CachedFiles counts copies the mount completed.
	CacheOpens, CachedFiles atomic.Int64
}

// String summarises the counters in a line.
func (s *Stats) String() string {
	img := s.ImageBytes.Load()
	fetched := s.SpanBytes.Load() + s.IndexBytes.Load()
	mean := time.Duration(0)
	if n := s.SpanLoads.Load(); n > 0 {
		mean = time.Duration(s.LoadNanos.Load() / n)
	}
	return fmt.Sprintf("read %s of files in %d reads (%d failed); fetched %s of the image's %s (%.1f%%: %s of indexes, %d spans, mean %s, slowest %s); %d span reads from memory; %d opens from the file cache, %d files added to it",
		mib(s.ReadBytes.Load()), s.Reads.Load(), s.ReadErrors.Load(), mib(fetched), mib(img), 100*float64(fetched)/float64(max(img, 1)),
		mib(s.IndexBytes.Load()), s.SpanLoads.Load(), mean.Round(time.Millisecond), time.Duration(s.MaxLoadNano.Load()).Round(time.Millisecond), s.SpanHits.Load(), s.CacheOpens.Load(), s.CachedFiles.Load())
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// Collector exports the counters to Prometheus.
func (s *Stats) Collector() prometheus.Collector { return statsCollector{s} }

type statsCollector struct{ s *Stats }

var statsDescs = map[string]*prometheus.Desc{
	"reads":        prometheus.NewDesc("shoal_mount_reads_total", "File reads served by the mount.", nil, nil),
	"read_bytes":   prometheus.NewDesc("shoal_mount_read_bytes_total", "Bytes of files served by the mount.", nil, nil),
	"read_errors":  prometheus.NewDesc("shoal_mount_read_errors_total", "File reads that failed (EIO).", nil, nil),
	"span_loads":   prometheus.NewDesc("shoal_mount_span_loads_total", "Spans of layers fetched and inflated.", nil, nil),
	"span_hits":    prometheus.NewDesc("shoal_mount_span_hits_total", "Span reads served from memory.", nil, nil),
	"span_bytes":   prometheus.NewDesc("shoal_mount_fetched_bytes_total", "Compressed layer bytes read for spans.", nil, nil),
	"load_secs":    prometheus.NewDesc("shoal_mount_span_load_seconds_total", "Time spent loading spans.", nil, nil),
	"cache_opens":  prometheus.NewDesc("shoal_mount_file_cache_opens_total", "Opens served from the file cache.", nil, nil),
	"cached_files": prometheus.NewDesc("shoal_mount_file_cache_added_total", "Files the mount copied whole into the file cache.", nil, nil),
	"image_bytes":  prometheus.NewDesc("shoal_mount_image_bytes", "Bytes of the mounted image's layers.", nil, nil),
	"index_bytes":  prometheus.NewDesc("shoal_mount_index_bytes", "Bytes of the layers' indexes, fetched at mount.", nil, nil),
}

func (c statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range statsDescs {
		ch <- d
	}
}

func (c statsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	counter := func(name string, v float64) {
		ch <- prometheus.MustNewConstMetric(statsDescs[name], prometheus.CounterValue, v)
	}
	gauge := func(name string, v float64) {
		ch <- prometheus.MustNewConstMetric(statsDescs[name], prometheus.GaugeValue, v)
	}
	counter("reads", float64(s.Reads.Load()))
	counter("read_bytes", float64(s.ReadBytes.Load()))
	counter("read_errors", float64(s.ReadErrors.Load()))
	counter("span_loads", float64(s.SpanLoads.Load()))
	counter("span_hits", float64(s.SpanHits.Load()))
	counter("span_bytes", float64(s.SpanBytes.Load()))
	counter("load_secs", time.Duration(s.LoadNanos.Load()).Seconds())
	counter("cache_opens", float64(s.CacheOpens.Load()))
	counter("cached_files", float64(s.CachedFiles.Load()))
	gauge("image_bytes", float64(s.ImageBytes.Load()))
	gauge("index_bytes", float64(s.IndexBytes.Load()))
}
