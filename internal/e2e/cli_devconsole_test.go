package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	dp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcore"
	cp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol"
	"github.com/chromedp/chromedp"
)

var consoleLine = regexp.MustCompile(`Console: (http://(127\.0\.0\.1:\d+)/console/)`)

// clientOf returns a client of the Berth API at addr that some other
// process serves (a berth dev, here).
func clientOf(t *testing.T, addr string) *berth {
	cfg := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("AKIDBERTHTEST", "secret", "")}
	endpoint := "http://" + addr
	return &berth{t: t, addr: addr,
		control: cp.NewFromConfig(cfg, func(o *cp.Options) { o.BaseEndpoint = &endpoint }),
		data:    dp.NewFromConfig(cfg, func(o *dp.Options) { o.BaseEndpoint = &endpoint })}
}

// processesUnder lists the processes whose working directory is dir or
// under it.
func processesUnder(dir string) []string {
	var out []string
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", p.Name(), "cwd"))
		if err != nil || (cwd != dir && !strings.HasPrefix(cwd, dir+"/")) {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		out = append(out, p.Name()+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
	}
	return out
}

// TestCLIDevConsole runs `berth dev` with its web console: an in-process
// Berth serves the console and the whole API, with the project's runtime
// deployed to it and its sessions run as plain processes. A call through
// the AgentCore data plane makes a session that the API lists with its
// output; a change to the code deploys a new version, and the same session
// then answers with the new code; Ctrl-C ends every process. No root needed.
func TestCLIDevConsole(t *testing.T) {
	c, project, code := devProject(t, "Con", "3219")

	port := freePort(t)
	cmd, stderr, exited := startDev(t, c, project, port)

	waitFor(t, 30*time.Second, "berth dev to print the console's URL", func() bool { return consoleLine.MatchString(stderr.String()) })
	m := consoleLine.FindStringSubmatch(stderr.String())
	consoleURL, addr := m[1], m[2]
	if want := "127.0.0.1:" + strconv.Itoa(port+1); addr != want {
		t.Logf("console on %s, not %s (taken?)", addr, want)
	}
	resp, err := http.Get(consoleURL)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/html") || !strings.Contains(string(page), "<html") {
		t.Fatalf("GET %s: %s, %s:\n%.200s", consoleURL, resp.Status, ct, page)
	}

	// The runtime, deployed as berth deploy does.
	b := clientOf(t, addr)
	waitFor(t, 20*time.Second, "the console's Berth to show version 1 deployed", func() bool {
		return strings.Contains(stderr.String(), "console: Con_Con version 1 deployed")
	})
	list, err := b.control.ListAgentRuntimes(context.Background(), &cp.ListAgentRuntimesInput{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.AgentRuntimes) != 1 || aws.ToString(list.AgentRuntimes[0].AgentRuntimeName) != "Con_Con" {
		t.Fatalf("the console's Berth has runtimes %+v, want Con_Con", list.AgentRuntimes)
	}
	id, arn := aws.ToString(list.AgentRuntimes[0].AgentRuntimeId), aws.ToString(list.AgentRuntimes[0].AgentRuntimeArn)
	b.waitReady(id, "1")

	// A session, through the AgentCore data plane.
	sid := sessionID("devconsole")
	if got := b.mustInvoke(invokeInput{arn: arn, session: sid, body: map[string]any{"prompt": "hi"}}); got["response"] != "You said: hi (message 1 of this session)" {
		t.Errorf("first answer: %v", got)
	}
	sessions := b.sessions()
	if len(sessions) != 1 || sessions[0].SessionID != sid || sessions[0].Version != "1" || sessions[0].State != "READY" {
		t.Errorf("sessions = %+v, want %s of version 1, READY", sessions, sid)
	}
	waitFor(t, 5*time.Second, "the session's output in its log", func() bool {
		for _, l := range b.logs("runtimeId=" + id + "&sessionId=" + sid) {
			if l.Text == "turn 1: hi" && l.Stream == "stdout" {
				return true
			}
		}
		return false
	})
	// Its agent is a plain process, with its child, beside berth dev's own.
	waitFor(t, 5*time.Second, "the agents' children to start", func() bool {
		n := 0
		for _, p := range processesUnder(project) {
			if strings.Contains(p, "sleep 3219") {
				n++
			}
		}
		return n == 2
	})

	if br := maybeBrowser(t); br != nil {
		t.Run("Browser", func(t *testing.T) {
			br.t = t
			runtimeRow, sessRow := fmt.Sprintf(`tr[data-runtime-id=%q]`, id), fmt.Sprintf(`tr[data-session-id=%q]`, sid)
			br.do(chromedp.EmulateViewport(1280, 800), chromedp.Navigate(consoleURL), chromedp.WaitVisible(chromedp.CSS(runtimeRow)))
			if text := br.text(runtimeRow); !containsAll(text, "Con_Con", "READY") {
				t.Errorf("runtime row reads %q, want its name and READY", text)
			}
			br.do(chromedp.Click(chromedp.CSS(`#nav a[data-view="sessions"]`)), chromedp.WaitVisible(chromedp.CSS(sessRow)))
			br.shot(artifactDir(t), "dev-console-sessions.png")
			br.checkConsole()
		})
	}

	// A change: a new version, and the same session answers with it.
	editFile(t, filepath.Join(code, "main.py"), "You said:", "You changed:")
	waitFor(t, 20*time.Second, "version 2 to be deployed", func() bool {
		return strings.Contains(stderr.String(), "console: Con_Con version 2 deployed")
	})
	waitFor(t, 10*time.Second, "the session of version 1 to end", func() bool { return !b.hasSession(sid) })
	if got := b.mustInvoke(invokeInput{arn: arn, session: sid, body: map[string]any{"prompt": "hi"}}); got["response"] != "You changed: hi (message 1 of this session)" {
		t.Errorf("answer after the change: %v", got)
	}
	if s := b.sessions(); len(s) != 1 || s[0].Version != "2" {
		t.Errorf("sessions after the change = %+v, want one of version 2", s)
	}

	// Ctrl-C: berth dev, its agent, the console's sessions and all their
	// children go.
	cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("berth dev exited with %v after Ctrl-C, want 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("berth dev did not exit within 20s of Ctrl-C")
	}
	if left := processesUnder(project); len(left) > 0 {
		t.Errorf("processes left after Ctrl-C: %q", left)
	}
	if resp, err := http.Get(consoleURL); err == nil {
		resp.Body.Close()
		t.Errorf("the console still answers after Ctrl-C: %s", resp.Status)
	}
	if recs, _ := os.ReadDir(filepath.Join(project, "agentcore", ".cli", "dev-berth", "sandboxes")); len(recs) > 0 {
		t.Errorf("sandbox records left after Ctrl-C: %v", recs)
	}

	// In the background, the console is served too, and stops with it.
	r := c.ok(project, "dev", "--detach", "--port", strconv.Itoa(port))
	m = regexp.MustCompile(`Console: (http://127\.0\.0\.1:\d+/console/)`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("berth dev --detach does not say where the console is:\n%s", r)
	}
	resp, err = http.Get(m[1])
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET %s of a detached berth dev: %s", m[1], resp.Status)
	}
	c.ok(project, "dev", "--stop")
	if resp, err := http.Get(m[1]); err == nil {
		resp.Body.Close()
		t.Errorf("the console still answers after --stop: %s", resp.Status)
	}
	if left := processesUnder(project); len(left) > 0 {
		t.Errorf("processes left after --stop: %q", left)
	}
}

// maybeBrowser returns a headless Chromium, or nil where none can run.
func maybeBrowser(t *testing.T) *browser {
	if os.Geteuid() != 0 {
		return nil // Chromium runs with --no-sandbox, as root only
	}
	path, err := exec.LookPath("chromium")
	if err != nil {
		return nil
	}
	return newBrowser(t, path)
}
