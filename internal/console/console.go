// Package console serves Berth's web console: a small single-page app of
// hand-written HTML, CSS and JavaScript modules, embedded in the binary. It
// has no backend of its own: the browser calls the same HTTP API as the CLI
// and the SDKs, on the same origin.
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// prefix is the path the console is served under.
const prefix = "/console/"

//go:embed static
var static embed.FS

// contentType returns the type of a console file by its extension. The
// types are listed here rather than taken from the mime package, whose table
// depends on the host's /etc/mime.types: a module script served with the
// wrong type does not run.
func contentType(ext string) (string, bool) {
	switch ext {
	case ".html":
		return "text/html; charset=utf-8", true
	case ".js":
		return "text/javascript; charset=utf-8", true
	case ".css":
		return "text/css; charset=utf-8", true
	case ".svg":
		return "image/svg+xml", true
	}
	return "", false
}

// securityPolicy allows the console its own scripts, styles and API calls
// and nothing else: no inline script, no third-party origin, no framing.
const securityPolicy = "default-src 'self'; object-src 'none'; base-uri 'none'; " +
	"form-action 'none'; frame-ancestors 'none'"

// asset is one file of the console, ready to serve.
type asset struct {
	data        []byte
	contentType string
	etag        string
}

type handler struct {
	assets map[string]asset
}

// Handler returns the console, to be mounted at /console/: it serves the
// app at /console/ and its files below, and redirects /console there. Every
// response asks the browser to revalidate with the file's ETag, so a new
// Berth binary is picked up at once while an unchanged file costs a 304.
func Handler() http.Handler {
	h, err := newHandler(static, "static")
	if err != nil {
		// The files are compiled in and checked by the tests: this is
		// a build defect, not a runtime condition.
		panic(err)
	}
	return h
}

func newHandler(fsys fs.FS, root string) (*handler, error) {
	h := &handler{assets: map[string]asset{}}
	err := fs.WalkDir(fsys, root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ctype, ok := contentType(path.Ext(p))
		if !ok {
			return fmt.Errorf("console asset %s: no content type for %q", p, path.Ext(p))
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return fmt.Errorf("read console asset: %w", err)
		}
		sum := sha256.Sum256(data)
		h.assets[strings.TrimPrefix(p, root+"/")] = asset{data: data, contentType: ctype,
			etag: `"` + hex.EncodeToString(sum[:16]) + `"`}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if _, ok := h.assets["index.html"]; !ok {
		return nil, fmt.Errorf("console assets have no index.html")
	}
	return h, nil
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == strings.TrimSuffix(prefix, "/") {
		// Relative URLs in the app resolve against the trailing slash.
		u := *r.URL
		u.Path = prefix
		http.Redirect(w, r, u.RequestURI(), http.StatusMovedPermanently)
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, prefix)
	if !ok {
		http.NotFound(w, r)
		return
	}
	if name == "" {
		name = "index.html"
	}
	a, ok := h.assets[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", a.contentType)
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("ETag", a.etag)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Content-Security-Policy", securityPolicy)
	hdr.Set("Referrer-Policy", "no-referrer")
	// ServeContent answers If-None-Match with 304 and serves ranges.
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.data))
}
