package console

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"
)

func TestHandler(t *testing.T) {
	h := Handler()
	tests := []struct {
		method, path string
		status       int
		ctype        string
		location     string
		body         string // a substring of the body
	}{
		{"GET", "/console/", 200, "text/html; charset=utf-8", "", `<script type="module" src="app.js">`},
		{"GET", "/console/index.html", 200, "text/html; charset=utf-8", "", "<title>Berth console</title>"},
		{"GET", "/console/app.js", 200, "text/javascript; charset=utf-8", "", "import"},
		{"GET", "/console/inspector.js", 200, "text/javascript; charset=utf-8", "", "export function view"},
		{"GET", "/console/sigv4.js", 200, "text/javascript; charset=utf-8", "", "export async function sign"},
		{"GET", "/console/credentials.js", 200, "text/javascript; charset=utf-8", "", "sessionStorage"},
		{"GET", "/console/style.css", 200, "text/css; charset=utf-8", "", ":root"},
		{"GET", "/console/favicon.svg", 200, "image/svg+xml", "", "<svg"},
		{"HEAD", "/console/app.js", 200, "text/javascript; charset=utf-8", "", ""},
		{"GET", "/console", 301, "", "/console/", ""},
		{"GET", "/console?x=1", 301, "", "/console/?x=1", ""},
		{"GET", "/console/nope.js", 404, "", "", ""},
		{"GET", "/console/static/index.html", 404, "", "", ""},
		{"GET", "/console/../console.go", 404, "", "", ""},
		{"GET", "/elsewhere", 404, "", "", ""},
		{"POST", "/console/app.js", 405, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(tt.method, tt.path, nil))
			if w.Code != tt.status {
				t.Fatalf("status = %d, want %d", w.Code, tt.status)
			}
			if tt.ctype != "" {
				if got := w.Header().Get("Content-Type"); got != tt.ctype {
					t.Errorf("Content-Type = %q, want %q", got, tt.ctype)
				}
				for _, k := range []string{"ETag", "Content-Security-Policy"} {
					if w.Header().Get(k) == "" {
						t.Errorf("no %s header", k)
					}
				}
				if got := w.Header().Get("Cache-Control"); got != "no-cache" {
					t.Errorf("Cache-Control = %q, want no-cache (revalidate with the ETag)", got)
				}
				if got := w.Header().Get("X-Content-Type-Options"); got != "nosniff" {
					t.Errorf("X-Content-Type-Options = %q, want nosniff", got)
				}
			}
			if got := w.Header().Get("Location"); got != tt.location {
				t.Errorf("Location = %q, want %q", got, tt.location)
			}
			if tt.status == 405 && w.Header().Get("Allow") != "GET, HEAD" {
				t.Errorf("Allow = %q, want GET, HEAD", w.Header().Get("Allow"))
			}
			if !strings.Contains(w.Body.String(), tt.body) {
				t.Errorf("body does not contain %q:\n%.300s", tt.body, w.Body.String())
			}
			if tt.method == "HEAD" && w.Body.Len() != 0 {
				t.Errorf("HEAD answered with a %d-byte body", w.Body.Len())
			}
		})
	}
}

// TestRevalidation: a browser holding the current version of a file gets a
// 304, one holding another version gets the file.
func TestRevalidation(t *testing.T) {
	h := Handler()
	get := func(etag string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "/console/app.js", nil)
		if etag != "" {
			r.Header.Set("If-None-Match", etag)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	first := get("")
	etag := first.Header().Get("ETag")
	if w := get(etag); w.Code != http.StatusNotModified || w.Body.Len() != 0 {
		t.Errorf("with If-None-Match %s: status %d, %d bytes; want 304, none", etag, w.Code, w.Body.Len())
	}
	if w := get(`"stale"`); w.Code != http.StatusOK || w.Body.String() != first.Body.String() {
		t.Errorf("with a stale ETag: status %d; want 200 and the file", w.Code)
	}
}

// TestReferences: every file the console's HTML and modules refer to by a
// relative URL is one it serves, so no module fails to load in the browser.
func TestReferences(t *testing.T) {
	h := Handler().(*handler)
	ref := regexp.MustCompile(`(?:from\s+|import\s*\(\s*|src=|href=)["'](\./)?([a-z0-9_-]+\.(?:js|css|svg))["']`)
	for name, a := range h.assets {
		for _, m := range ref.FindAllStringSubmatch(string(a.data), -1) {
			if _, ok := h.assets[m[2]]; !ok {
				t.Errorf("%s refers to %s, which the console does not serve", name, m[2])
			}
		}
	}
	// Unreferenced files would be dead weight in the binary.
	for name := range h.assets {
		if name == "index.html" {
			continue
		}
		used := false
		for other, a := range h.assets {
			if other != name && strings.Contains(string(a.data), name) {
				used = true
			}
		}
		if !used {
			t.Errorf("%s is served but nothing refers to it", name)
		}
	}
}

// TestNoHTMLInjection: the console never parses strings as HTML; API data
// reaches the page only as text.
func TestNoHTMLInjection(t *testing.T) {
	h := Handler().(*handler)
	sink := regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function`)
	for name, a := range h.assets {
		if !strings.HasSuffix(name, ".js") {
			continue
		}
		if loc := sink.FindIndex(a.data); loc != nil {
			t.Errorf("%s uses %s", name, a.data[loc[0]:loc[1]])
		}
	}
}

func TestNewHandlerErrors(t *testing.T) {
	tests := []struct {
		name string
		fs   fstest.MapFS
		want string
	}{
		{"unknown type", fstest.MapFS{"s/index.html": {}, "s/logo.webp": {}}, `no content type for ".webp"`},
		{"no index", fstest.MapFS{"s/app.js": {}}, "no index.html"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newHandler(tt.fs, "s")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("newHandler = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
