package console

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os/exec"
	"reflect"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestSSEParser runs the console's server-sent events parser in Chromium
// over streams cut into pieces the way a network may deliver them.
func TestSSEParser(t *testing.T) {
	type event struct {
		Event string `json:"event"`
		Data  string `json:"data"`
		ID    string `json:"id"`
	}
	msg := func(data string) event { return event{Event: "message", Data: data} }
	tests := []struct {
		name   string
		chunks []string
		want   []event
	}{
		{"one frame", []string{"data: hello\n\n"}, []event{msg("hello")}},
		{"frames split anywhere", []string{"da", "ta: {\"i\":0}\n", "\nda", "ta: {\"i\":1}\n\n"}, []event{msg(`{"i":0}`), msg(`{"i":1}`)}},
		{"CRLF split between chunks", []string{"data: a\r", "\ndata: b\r", "\n\r", "\n"}, []event{msg("a\nb")}},
		{"bare CR line ends", []string{"data: a\r\rdata: b\r\r"}, []event{msg("a"), msg("b")}},
		{"multi-line data", []string{"data: one\ndata: two\n\n"}, []event{msg("one\ntwo")}},
		{"only one space stripped", []string{"data:  two spaces\ndata:none\n\n"}, []event{msg(" two spaces\nnone")}},
		{"comments and retry ignored", []string{": keep-alive\nretry: 10\ndata: x\n\n"}, []event{msg("x")}},
		{"named event with id", []string{"event: done\nid: 7\ndata: {}\n\ndata: next\n\n"},
			[]event{{Event: "done", Data: "{}", ID: "7"}, {Event: "message", Data: "next", ID: "7"}}},
		{"no data, no event", []string{"event: ping\n\n\n\n"}, nil},
		{"field without colon", []string{"data\n\n"}, []event{msg("")}},
		{"last frame without blank line", []string{"data: a\n\ndata: tail"}, []event{msg("a"), msg("tail")}},
		{"JSON string frames", []string{"data: \"Hel\"\n\ndata: \"lo\"\n\n"}, []event{msg(`"Hel"`), msg(`"lo"`)}},
	}
	chunks := make([][]string, len(tests))
	for i, tt := range tests {
		chunks[i] = tt.chunks
	}
	input, err := json.Marshal(chunks)
	if err != nil {
		t.Fatal(err)
	}

	srv := httptest.NewServer(Handler())
	defer srv.Close()
	ctx := newBrowser(t)
	// Any page of the console's origin can import its modules.
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/console/favicon.svg")); err != nil {
		t.Fatal(err)
	}
	js := fmt.Sprintf(`import('/console/sse.js').then(({ SSEParser }) => %s.map((chunks) => {
		const out = [];
		const p = new SSEParser((ev) => out.push(ev));
		for (const c of chunks) p.push(c);
		p.end();
		return out;
	}))`, input)
	got, err := chromedp.Run(ctx, chromedp.Evaluate[[][]event](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	for i, tt := range tests {
		if len(got[i]) == 0 && len(tt.want) == 0 {
			continue
		}
		if !reflect.DeepEqual(got[i], tt.want) {
			t.Errorf("%s: %q parsed to %+v, want %+v", tt.name, tt.chunks, got[i], tt.want)
		}
	}
}

// newBrowser starts headless Chromium with a new profile, skipping the test
// when Chromium is not installed.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("needs Chromium (apt-get install chromium); .ci/run installs it")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		// Chromium's own sandbox refuses to run as root.
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		// Keep Chromium from reaching for Google's services.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	ctx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancelTab := chromedp.NewContext(ctx)
	t.Cleanup(cancelTab)
	return ctx
}
