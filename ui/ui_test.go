package ui

import (
	"bytes"
	"io/fs"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The committed build is what `make ui` makes from src/ with the locked
// packages: rebuilt into a temporary folder, every file is the same, byte
// for byte. It needs Node.js and ui/node_modules (`make tools` runs npm
// ci); without them it is skipped unless HEADROOM_REQUIRE_TOOLS is set,
// as `make test` sets it.
func TestBuildIsFresh(t *testing.T) {
	node, err := exec.LookPath("node")
	_, modErr := os.Stat("node_modules/esbuild")
	if err != nil || modErr != nil {
		if os.Getenv("HEADROOM_REQUIRE_TOOLS") != "" {
			t.Fatalf("node (%v) or ui/node_modules (%v) missing: make tools installs them", err, modErr)
		}
		t.Skip("node or ui/node_modules missing: `make tools` installs them (npm ci)")
	}
	out := t.TempDir()
	cmd := exec.Command(node, "build.mjs", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, b)
	}
	n := 0
	err = fs.WalkDir(Files(), ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		n++
		committed, err := fs.ReadFile(Files(), name)
		if err != nil {
			return err
		}
		fresh, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Errorf("%s: committed, not built: %v", name, err)
			return nil
		}
		if !bytes.Equal(committed, fresh) {
			t.Errorf("ui/dist/%s is stale: run make ui and commit it", name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	built, _ := os.ReadDir(out)
	if n == 0 || len(built) != n {
		t.Errorf("%d files committed, %d built", n, len(built))
	}
}

// The page fetches nothing from elsewhere: its HTML names only its own
// files, and the server tells the browser so (Content-Security-Policy).
func TestNoExternalRequests(t *testing.T) {
	index, err := fs.ReadFile(Files(), "index.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"http://", "https://", "//"} {
		if bytes.Contains(index, []byte(`="`+bad)) {
			t.Errorf("index.html refers to %s...", bad)
		}
	}
	rec := httptest.NewRecorder()
	Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 200 || !strings.Contains(rec.Header().Get("Content-Security-Policy"), "default-src 'self'") || !bytes.Contains(rec.Body.Bytes(), []byte("app.js")) {
		t.Errorf("GET /: %d, CSP %q", rec.Code, rec.Header().Get("Content-Security-Policy"))
	}
	// Revalidation by ETag.
	etag := rec.Header().Get("ETag")
	req := httptest.NewRequest("GET", "/app.js", nil)
	req.Header.Set("If-None-Match", etag)
	rec = httptest.NewRecorder()
	Handler().ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Errorf("app.js with index.html's ETag: %d", rec.Code)
	}
	req.Header.Set("If-None-Match", rec.Header().Get("ETag"))
	rec = httptest.NewRecorder()
	Handler().ServeHTTP(rec, req)
	if rec.Code != 304 {
		t.Errorf("app.js with its own ETag: %d, want 304", rec.Code)
	}
}
