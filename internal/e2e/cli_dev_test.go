package e2e

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for a process to write while the test
// reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// freePort returns a TCP port nothing listens on.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// post calls the agent at port and returns its answer, or "" if it does not
// answer.
func post(port int, body string) string {
	resp, err := http.Post("http://127.0.0.1:"+strconv.Itoa(port)+"/invocations", "application/json", strings.NewReader(body))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return string(data)
}

func pingOK(port int) bool {
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/ping")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// TestCLIDev runs `berth dev` on a new project: it answers /ping and
// /invocations, restarts when the code changes, and on Ctrl-C stops the
// agent and everything the agent started; --detach and --stop do the same
// in the background.
func TestCLIDev(t *testing.T) {
	c, project, code := devProject(t, "Dev", "3217")

	port := freePort(t)
	cmd, stderr, exited := startDev(t, c, project, port)

	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/invocations"
	waitFor(t, 30*time.Second, "berth dev to say the agent is ready", func() bool { return strings.Contains(stderr.String(), url) })
	if !pingOK(port) {
		t.Fatal("GET /ping does not answer 200")
	}
	if got := post(port, `{"prompt": "hi"}`); !strings.Contains(got, "You said: hi") {
		t.Fatalf("first answer: %q", got)
	}

	editFile(t, filepath.Join(code, "main.py"), "You said:", "You changed:")
	waitFor(t, 30*time.Second, "the agent to restart with the change", func() bool {
		return strings.Contains(post(port, `{"prompt": "hi"}`), "You changed: hi")
	})
	if !strings.Contains(stderr.String(), "main.py changed: restarting") {
		t.Errorf("berth dev does not say why it restarted:\n%s", stderr.String())
	}
	// The first agent's child went with it: one is left, the new agent's.
	children := 0
	for _, p := range processesUnder(code) {
		if strings.Contains(p, "sleep 3217") {
			children++
		}
	}
	if children != 1 {
		t.Errorf("%d of the agents' children run after a restart, want 1: %q", children, processesUnder(code))
	}

	// Ctrl-C: everything goes.
	cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("berth dev exited with %v after Ctrl-C, want 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("berth dev did not exit within 20s of Ctrl-C")
	}
	if pingOK(port) {
		t.Error("the agent still answers after Ctrl-C")
	}
	if left := processesUnder(code); len(left) > 0 {
		t.Errorf("processes left after Ctrl-C: %q", left)
	}

	// In the background.
	r := c.ok(project, "dev", "--detach", "--port", strconv.Itoa(port))
	logFile := filepath.Join(project, "agentcore", ".cli", "dev.log")
	if !strings.Contains(r.stdout, url) || !strings.Contains(r.stdout, logFile) {
		t.Errorf("berth dev --detach output:\n%s", r)
	}
	if got := post(port, `{"prompt": "bg"}`); !strings.Contains(got, "You changed: bg") {
		t.Errorf("detached agent answers %q", got)
	}
	c.fails(project, 1, []string{"already running"}, "dev", "--detach", "--port", strconv.Itoa(port))
	c.ok(project, "dev", "--stop")
	if pingOK(port) {
		t.Error("the detached agent still answers after --stop")
	}
	if left := processesUnder(code); len(left) > 0 {
		t.Errorf("processes left after --stop: %q", left)
	}
	if log, _ := os.ReadFile(logFile); !strings.Contains(string(log), "turn 1: bg") {
		t.Errorf("the agent's output is not in %s:\n%s", logFile, log)
	}
	c.fails(project, 4, []string{"no berth dev is running"}, "dev", "--stop")

	// A port in use is refused with what to do.
	ln, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c.fails(project, 1, []string{"port " + strconv.Itoa(port) + " is in use", "--port"}, "dev", "--port", strconv.Itoa(port))
}

// startDev runs `berth dev --port port` in project and returns it, its
// stderr, and a channel that yields its exit; the command is killed, and its
// output logged on failure, when the test ends.
func startDev(t *testing.T, c *cli, project string, port int) (cmd *exec.Cmd, stderr *syncBuffer, exited chan error) {
	t.Helper()
	cmd = exec.Command(c.bin, "dev", "--port", strconv.Itoa(port))
	cmd.Dir, cmd.Env = project, c.env
	stdout := &syncBuffer{}
	stderr = &syncBuffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited = make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("berth dev stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		}
	})
	return cmd, stderr, exited
}

// devProject scaffolds a Python project named name whose agent starts a
// child of its own (sleep seconds), which must end with it; it returns the
// CLI, the project and its code directory.
func devProject(t *testing.T, name, seconds string) (c *cli, project, code string) {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("needs python3 to run the scaffolded agent")
	}
	c = newCLI(t, "")
	work := t.TempDir()
	c.ok(work, "create", "--name", name, "--output-dir", work)
	project = filepath.Join(work, name)
	code = filepath.Join(project, "app", name)
	editFile(t, filepath.Join(code, "main.py"), "def main():\n", "def main():\n    import subprocess\n    subprocess.Popen([\"sleep\", \""+seconds+"\"])\n")
	return c, project, code
}
