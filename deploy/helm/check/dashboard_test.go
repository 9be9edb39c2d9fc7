package check

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The Grafana dashboard's queries name only metrics that shoal serves: the
// names are those the Go sources register (a histogram's series end in
// _bucket, _sum and _count), so a metric renamed in code fails here.
func TestDashboardQueriesServedMetrics(t *testing.T) {
	data, err := os.ReadFile("../../grafana/shoal.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	served := servedMetrics(t)
	metric := regexp.MustCompile(`shoal_[a-z0-9_]+`)
	var named int
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q queries nothing", p.Title)
		}
		for _, tg := range p.Targets {
			for _, m := range metric.FindAllString(tg.Expr, -1) {
				base := m
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(m, suffix); ok && served[b] {
						base = b
					}
				}
				if !served[base] {
					t.Errorf("panel %q: %s is not a metric shoal serves", p.Title, m)
				}
				named++
			}
		}
	}
	if named == 0 {
		t.Fatal("the dashboard names no shoal metric")
	}
}

// servedMetrics are the metric names in shoal's sources: the strings
// "shoal_..." given to prometheus as names.
func servedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	quoted := regexp.MustCompile(`(?:Name:\s*|NewDesc\()"(shoal_[a-z0-9_]+)"`)
	err := filepath.WalkDir("../../../pkg", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range quoted.FindAllStringSubmatch(string(src), -1) {
			names[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(names) < 10 {
		t.Fatalf("found only %d metric names in the sources", len(names))
	}
	return names
}
