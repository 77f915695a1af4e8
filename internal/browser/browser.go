// Package browser starts headless Chromium for tests that check pages
// as a person sees them (the report's HTML, the web console) and for
// the console's page-load benchmark. Nothing in the server imports it.
package browser

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// New returns a context of a fresh headless Chromium tab, closed when the
// test ends. Chromium comes from Debian's package, which `make test`
// installs; run by hand without it, the test is skipped unless
// HEADROOM_REQUIRE_TOOLS is set (as `make test` sets it), so that CI
// cannot pass without having run it.
func New(t testing.TB) context.Context {
	t.Helper()
	ctx, stop, err := Start()
	if errors.Is(err, exec.ErrNotFound) {
		if os.Getenv("HEADROOM_REQUIRE_TOOLS") != "" {
			t.Fatalf("chromium not found (apt-get install chromium, or make tools): %v", err)
		}
		t.Skip("chromium is not installed: `make test` installs it (apt-get install chromium)")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	// A generous hang guard: the browser starts in a second or two.
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// Start starts headless Chromium and returns a tab's context and the
// function that closes it (for the benchmark harness; tests use New).
func Start() (context.Context, func(), error) {
	path, err := exec.LookPath("chromium")
	if err != nil {
		return nil, nil, err
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.WindowSize(1200, 900))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel2 := chromedp.NewContext(actx)
	return ctx, func() { cancel2(); cancel() }, nil
}
