package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// TestConsole drives the web console in real headless Chromium against a
// real Berth: the deployed runtime is listed, the agent inspector streams an
// answer frame by frame, the session shows up with its live log tail, and
// its Stop button ends it. Screenshots are kept as test artifacts.
func TestConsole(t *testing.T) {
	chromium := requireChromium(t)
	b := startBerth(t, "")
	id, arn := b.deploy("console_agent", pythonAgent(t), deployOpts{})
	base := "http://" + b.addr
	checkConsoleServed(t, base)

	br := newBrowser(t, chromium)
	shots := artifactDir(t)
	row := fmt.Sprintf(`tr[data-runtime-id=%q]`, id)

	// Runtimes: the new runtime is listed, ready.
	br.do(chromedp.EmulateViewport(1440, 1100), chromedp.Navigate(base+"/console"), chromedp.WaitVisible(chromedp.CSS(row)))
	if text := br.text(row); !containsAll(text, "console_agent", "READY") {
		t.Errorf("runtime row reads %q, want its name and READY", text)
	}
	br.shot(shots, "console-runtimes.png")

	// The runtime's page: its configuration, endpoint and version.
	br.do(chromedp.Click(chromedp.CSS(row+` a[href^="#/runtimes/"]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-endpoint="DEFAULT"]`)))
	for sel, want := range map[string][]string{
		`dl.props`:                    {arn, "PYTHON_3_11", "main.py"},
		`tr[data-endpoint="DEFAULT"]`: {"READY", "1"},
		`tr[data-version="1"]`:        {"READY"},
	} {
		if text := br.text(sel); !containsAll(text, want...) {
			t.Errorf("%s reads %q, want %q in it", sel, text, want)
		}
	}
	br.shot(shots, "console-runtime.png")
	br.do(chromedp.Click(chromedp.CSS(`#nav a[data-view="runtimes"]`)), chromedp.WaitVisible(chromedp.CSS(row)))

	// Inspector, opened from the runtime's row: a streaming call sent as a
	// raw JSON body.
	br.do(chromedp.Click(chromedp.CSS(row+` a[href^="#/inspector"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#inspect-send:not(:disabled)`)))
	sid := br.value("#inspect-session")
	if len(sid) < 33 {
		t.Fatalf("generated session ID %q is shorter than 33 characters", sid)
	}
	const frames = 6
	br.do(chromedp.Click(chromedp.CSS("#inspect-raw")),
		fill("#inspect-body", fmt.Sprintf(`{"op":"stream","n":%d,"delay":0.3}`, frames)),
		chromedp.Click(chromedp.CSS("#inspect-send")))

	// The answer must appear frame by frame: poll the page until the call
	// is done, noting when the first frame became visible.
	var firstSeen time.Time
	var lastAlreadyThere bool
	var out turnState
	deadline := time.Now().Add(20 * time.Second)
	for {
		out = br.lastTurn()
		if firstSeen.IsZero() && strings.Contains(out.Output, `{"i":0,`) {
			firstSeen = time.Now()
			lastAlreadyThere = strings.Contains(out.Output, fmt.Sprintf(`{"i":%d,`, frames-1))
		}
		if out.State != "sending" && out.State != "streaming" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("streaming call not done after 20s: %+v", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out.State != "done" {
		t.Fatalf("streaming call ended %q: %+v", out.State, out)
	}
	got := regexp.MustCompile(`\{"i":(\d+),"t":([0-9.]+)\}`).FindAllStringSubmatch(out.Output, -1)
	if len(got) != frames {
		t.Fatalf("inspector shows %d frames, want %d:\n%s", len(got), frames, out.Output)
	}
	for i, m := range got {
		if m[1] != strconv.Itoa(i) {
			t.Errorf("frame %d shown is frame %s of the agent", i, m[1])
		}
	}
	// The agent stamps each frame with the time it produced it (same host
	// clock): the first frame was on screen before the last one existed.
	lastProduced, err := strconv.ParseFloat(got[frames-1][2], 64)
	if err != nil {
		t.Fatal(err)
	}
	if lastAlreadyThere || !firstSeen.Before(time.UnixMicro(int64(lastProduced*1e6))) {
		t.Errorf("the first frame appeared (at %s) only with the last (produced at %.3f): the answer was not shown as it streamed",
			firstSeen.Format(time.StampMicro), lastProduced)
	}
	if !strings.Contains(out.Meta, fmt.Sprintf("%d frames", frames)) || !strings.Contains(out.Meta, "text/event-stream") {
		t.Errorf("turn header reads %q, want the frame count and content type", out.Meta)
	}

	// A prompt in the same session: the agent echoes it (and counts calls,
	// so the sandbox is the same one) and logs it. Its markup must show as
	// text.
	const prompt = "hi from the <b>console</b>"
	br.do(chromedp.Click(chromedp.CSS("#inspect-raw")),
		fill("#inspect-prompt", prompt),
		chromedp.Click(chromedp.CSS("#inspect-send")))
	out = br.waitTurn()
	for _, want := range []string{`"echo": "` + prompt + `"`, `"count": 2`, `"session": "` + sid + `"`} {
		if out.State != "done" || !strings.Contains(out.Output, want) {
			t.Errorf("echo call ended %q showing %q, want it to show %s", out.State, out.Output, want)
		}
	}

	// Sessions: the session is live.
	sessRow := fmt.Sprintf(`tr[data-session-id=%q]`, sid)
	br.do(chromedp.Click(chromedp.CSS(`#nav a[data-view="sessions"]`)), chromedp.WaitVisible(chromedp.CSS(sessRow)))
	if text := br.text(sessRow); !containsAll(text, "console_agent", "READY") {
		t.Errorf("session row reads %q, want the runtime's name and READY", text)
	}
	if !b.hasSession(sid) {
		t.Errorf("session %s is not live according to the API", sid)
	}

	// Logs, opened from the session's row: the history, then a line
	// written while the tail is open.
	br.do(chromedp.Click(chromedp.CSS(sessRow + ` a[href^="#/logs"]`)))
	br.waitLogLine("echo: " + prompt)
	b.mustInvoke(invokeInput{arn: arn, session: sid, body: map[string]any{"prompt": "followed live"}})
	br.waitLogLine("echo: followed live")
	if n := browserRun(br, chromedp.Evaluate[int](`document.querySelectorAll('main b').length`)); n != 0 {
		t.Errorf("the agent's text became %d HTML elements", n)
	}
	br.shot(shots, "console-logs.png")

	if n := br.openFollows(); n != 1 {
		t.Errorf("the log view has %d log streams open, want 1", n)
	}

	// Stop: the row goes away, and so does the session. The log tail ends
	// with its view.
	br.do(chromedp.Click(chromedp.CSS(`#nav a[data-view="sessions"]`)), chromedp.WaitVisible(chromedp.CSS(sessRow)))
	waitFor(t, 5*time.Second, "the log stream to end with its view", func() bool { return br.openFollows() == 0 })
	br.shot(shots, "console-sessions.png")
	br.do(chromedp.Click(chromedp.CSS(sessRow+" button.danger")), chromedp.WaitNotPresent(chromedp.CSS(sessRow)))
	if b.hasSession(sid) {
		t.Errorf("session %s still live after Stop", sid)
	}

	// An agent failure is shown in AgentCore's terms.
	br.do(chromedp.Click(chromedp.CSS(`#nav a[data-view="inspector"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#inspect-send:not(:disabled)`)),
		chromedp.Click(chromedp.CSS(`#inspect-session + button`)))
	if again := br.value("#inspect-session"); again == sid || len(again) < 33 {
		t.Errorf("new session ID = %q (was %q), want another one of 33+ characters", again, sid)
	}
	br.do(chromedp.Click(chromedp.CSS("#inspect-raw")),
		fill("#inspect-body", `{"op":"crash"}`),
		chromedp.Click(chromedp.CSS("#inspect-send")))
	if out := br.waitTurn(); out.State != "error" || out.ErrorType != "RuntimeClientError" || !strings.Contains(out.Error, "HTTP 424") {
		t.Errorf("crashing call shows %+v, want a RuntimeClientError, HTTP 424", out)
	}
	br.shot(shots, "console-inspector.png")
	br.checkConsole()
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// requireChromium returns Chromium's path, skipping the test where it
// cannot run.
func requireChromium(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (Berth's sandboxes; Chromium runs with --no-sandbox); CI runs as root")
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("needs Chromium (apt-get install chromium); .ci/run installs it")
	return ""
}

// checkConsoleServed checks that the server mounts the console.
func checkConsoleServed(t *testing.T, base string) {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(base + "/console")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode/100 != 3 || loc != "/console/" {
		t.Errorf("GET /console: %s to %q, want a redirect to /console/", resp.Status, loc)
	}
	resp, err = c.Get(base + "/console/app.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/javascript") {
		t.Errorf("GET /console/app.js: %s, %s; want 200, text/javascript", resp.Status, ct)
	}
}

// artifactDir is where the test keeps what a person may want to look at:
// $BERTH_TEST_ARTIFACTS if set.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("BERTH_TEST_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// browser is a headless Chromium tab driven by a test.
type browser struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	messages []chromedp.ConsoleMessage
	// follows tells, for each log-following request the page made,
	// whether it is still open.
	follows map[network.RequestID]bool
}

// newBrowser starts Chromium with a new profile; it stops with the test or
// after a minute, whichever comes first.
func newBrowser(t *testing.T, path string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		// Without these Chromium keeps trying to reach Google's
		// services, which the test machine has no route to.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
	)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	ctx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancelTab := chromedp.NewContext(ctx)
	t.Cleanup(cancelTab)

	br := &browser{t: t, ctx: ctx, follows: map[network.RequestID]bool{}}
	// Start the browser, then collect what the page writes to its console.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	err := chromedp.Listen(ctx, func(ev any) {
		br.mu.Lock()
		defer br.mu.Unlock()
		switch ev := ev.(type) {
		case *network.EventRequestWillBeSent:
			if strings.Contains(ev.Request.URL, "/berth/v1/logs?") {
				br.follows[ev.RequestID] = true
			}
		case *network.EventLoadingFinished:
			delete(br.follows, ev.RequestID)
		case *network.EventLoadingFailed:
			delete(br.follows, ev.RequestID)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	messages := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			br.mu.Lock()
			br.messages = append(br.messages, m)
			br.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancelTab()
		<-done
	})
	return br
}

func (br *browser) do(steps ...chromedp.Action[chromedp.Void]) {
	br.t.Helper()
	if err := chromedp.Do(br.ctx, steps...); err != nil {
		br.t.Fatalf("browser: %v\npage console:\n%s", err, br.consoleText())
	}
}

func browserRun[T any](br *browser, a chromedp.Action[T]) T {
	br.t.Helper()
	v, err := chromedp.Run(br.ctx, a)
	if err != nil {
		br.t.Fatalf("browser: %v\npage console:\n%s", err, br.consoleText())
	}
	return v
}

func (br *browser) text(css string) string {
	br.t.Helper()
	return browserRun(br, chromedp.Text(chromedp.CSS(css)))
}

// fill replaces the text of a form field as a person would: empty it,
// then type.
func fill(css, text string) chromedp.Action[chromedp.Void] {
	empty := fmt.Sprintf(`(() => { const e = document.querySelector(%q); e.value = ''; e.dispatchEvent(new Event('input')); })()`, css)
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		if _, err := chromedp.Evaluate[chromedp.Void](empty)(ctx, t); err != nil {
			return chromedp.Void{}, fmt.Errorf("empty %s: %w", css, err)
		}
		return chromedp.SendKeys(chromedp.CSS(css), text)(ctx, t)
	}
}

func (br *browser) value(css string) string {
	br.t.Helper()
	return browserRun(br, chromedp.Value(chromedp.CSS(css)))
}

// turnState is what the inspector shows of its latest call.
type turnState struct {
	State     string `json:"state"`
	Meta      string `json:"meta"`
	Output    string `json:"output"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
}

const lastTurnJS = `(() => {
	const t = document.querySelector('.transcript > .turn:last-child');
	if (!t) return {state: 'none'};
	const text = (sel) => t.querySelector(sel)?.textContent ?? '';
	return {state: t.dataset.state, meta: text('.turn-meta'), output: text('.output'),
		errorType: text('.error-type'), error: text('.notice.error')};
})()`

func (br *browser) lastTurn() turnState {
	br.t.Helper()
	return browserRun(br, chromedp.Evaluate[turnState](lastTurnJS))
}

// waitTurn waits for the inspector's latest call to end.
func (br *browser) waitTurn() turnState {
	br.t.Helper()
	browserRun(br, chromedp.Poll[chromedp.Void](
		`!['none', 'sending', 'streaming'].includes(document.querySelector('.transcript > .turn:last-child')?.dataset.state ?? 'none')`,
		chromedp.WithPollingTimeout(20*time.Second)))
	return br.lastTurn()
}

// waitLogLine waits for the log view to show a line.
func (br *browser) waitLogLine(line string) {
	br.t.Helper()
	browserRun(br, chromedp.Poll[chromedp.Void](
		fmt.Sprintf(`[...document.querySelectorAll('.logline .text')].some((e) => e.textContent === %q)`, line),
		chromedp.WithPollingTimeout(15*time.Second)))
}

// shot saves a screenshot of the page.
func (br *browser) shot(dir, name string) {
	br.t.Helper()
	png := browserRun(br, chromedp.CaptureScreenshot())
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		br.t.Fatal(err)
	}
	br.t.Logf("screenshot: %s", path)
}

// openFollows is the number of log streams the page is reading.
func (br *browser) openFollows() int {
	br.mu.Lock()
	defer br.mu.Unlock()
	return len(br.follows)
}

func (br *browser) consoleText() string {
	br.mu.Lock()
	defer br.mu.Unlock()
	var s strings.Builder
	for _, m := range br.messages {
		s.WriteString(m.String() + "\n")
	}
	return s.String()
}

// checkConsole fails the test on script errors and refused content in the
// page: exceptions, console errors and warnings, Content-Security-Policy
// violations. Failed calls (the 424 of a crashing agent) are expected.
func (br *browser) checkConsole() {
	br.t.Helper()
	br.mu.Lock()
	defer br.mu.Unlock()
	for _, m := range br.messages {
		bad := m.IsException() || (m.Source == "" && (m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleWarning)) ||
			m.Source == "security" || m.Source == "javascript"
		if bad {
			br.t.Errorf("page console: %s", m)
		} else {
			br.t.Logf("page console: %s", m)
		}
	}
}
