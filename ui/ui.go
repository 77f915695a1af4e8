// Package ui owns the web console's built files (dist/, made by `make
// ui` from src/ with esbuild and the packages package-lock.json pins)
// and serves them. It must not reach the database or the API: the page
// talks to the server's HTTP API from the browser.
package ui

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed dist
var dist embed.FS

// Files returns the built console (index.html, app.js, app.css).
func Files() fs.FS {
	f, err := fs.Sub(dist, "dist")
	if err != nil {
		panic(err) // the embed directive guarantees dist
	}
	return f
}

// Handler serves the console: index.html at "/", the assets by name,
// each with an ETag of its content so that a browser revalidates cheaply.
func Handler() http.Handler {
	files := Files()
	type asset struct {
		body  []byte
		ctype string
		etag  string
	}
	assets := map[string]asset{}
	for _, name := range []string{"index.html", "app.js", "app.css"} {
		b, err := fs.ReadFile(files, name)
		if err != nil {
			panic(err)
		}
		sum := sha256.Sum256(b)
		ctype := map[string]string{".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}[path.Ext(name)]
		assets[name] = asset{b, ctype, `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/")
		if name == "" {
			name = "index.html"
		}
		a, ok := assets[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", a.ctype)
		w.Header().Set("ETag", a.etag)
		w.Header().Set("Cache-Control", "no-cache")
		// The page fetches nothing from elsewhere; the browser is told so.
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:")
		if r.Header.Get("If-None-Match") == a.etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Write(a.body)
	})
}
