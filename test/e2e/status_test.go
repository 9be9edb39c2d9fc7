package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/shoal-ipfs/shoal/internal/testenv"
)

// TestStatusPageInABrowser: the page at / of the metrics listener loads in
// a real browser (Debian's chromium, headless) without a console error or
// an exception, lists the node's peers and images, and draws its plots.
// With $SHOAL_STATUS_SCREENSHOT set, it saves a screenshot there (the one
// in docs/operations.md).
func TestStatusPageInABrowser(t *testing.T) {
	chromium := testenv.Tool(t, "chromium")
	metrics := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	a := startShoalDaemon(t)
	b := startShoalDaemon(t, "--metrics-listen", metrics, "--peer", a.Peer)
	root := lastLine(b.run(t, "push", "oci:"+helloImage(t)+":v1"))

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.Headless, chromedp.WindowSize(1200, 900))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 90*time.Second)
	defer cancel()

	var mu sync.Mutex
	var problems []string
	err := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			desc := d.Text
			if d.Exception != nil {
				desc += " " + d.Exception.Description
			}
			problems = append(problems, fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber, desc))
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
				var args []string
				for _, a := range ev.Args {
					args = append(args, string(a.Value))
				}
				problems = append(problems, fmt.Sprintf("console %s: %s", ev.Type, strings.Join(args, " ")))
			}
		}
	})
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+metrics+"/"), chromedp.WaitVisible("#images tbody tr")); err != nil {
		t.Fatalf("the status page in chromium: %v", err)
	}
	paths, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#plots svg path").length`))
	if err != nil {
		t.Fatal(err)
	}
	peers, err := chromedp.Run(ctx, chromedp.Text("#peers tbody"))
	if err != nil {
		t.Fatal(err)
	}
	images, err := chromedp.Run(ctx, chromedp.Text("#images tbody"))
	if err != nil {
		t.Fatal(err)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Errorf("the page logged:\n%s", strings.Join(problems, "\n"))
	}
	if paths < 5 {
		t.Errorf("%d lines drawn in the plots, want 5", paths)
	}
	if id := a.Peer[strings.LastIndex(a.Peer, "/")+1:]; !strings.Contains(peers, id) {
		t.Errorf("the peers table lacks %s:\n%s", id, peers)
	}
	if !strings.Contains(images, root) {
		t.Errorf("the images table lacks %s:\n%s", root, images)
	}
	if p := os.Getenv("SHOAL_STATUS_SCREENSHOT"); p != "" {
		if err := os.WriteFile(p, shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
