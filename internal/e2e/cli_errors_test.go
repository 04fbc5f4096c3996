package e2e

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

// TestCLIBadInput: mistakes give a message that says what is wrong and what
// to do, and an exit code that says which kind of mistake it was. None of
// these needs a server.
func TestCLIBadInput(t *testing.T) {
	// A port that nothing listens on: the server is down.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close()
	c := newCLI(t, down)
	outside := t.TempDir()
	work := t.TempDir()
	c.ok(work, "create", "--name", "Errs", "--output-dir", work)
	project := filepath.Join(work, "Errs")

	broken := filepath.Join(t.TempDir(), "Broken")
	newCLI(t, "").ok(filepath.Dir(broken), "create", "--name", "Broken")
	editJSON(t, filepath.Join(broken, "agentcore", "agentcore.json"), func(v map[string]any) {
		rt := v["runtimes"].([]any)[0].(map[string]any)
		rt["entrypoint"] = "main.go"
		rt["envVars"] = []any{map[string]any{"name": "1BAD", "value": "x"}}
	})

	for _, tc := range []struct {
		name string
		dir  string
		code int
		want []string
		args []string
	}{
		{"invalid name", work, 2, []string{`project name "my-agent" is not valid`, "letters and digits"}, []string{"create", "--name", "my-agent"}},
		{"no name", work, 2, []string{"--name is required"}, []string{"create"}},
		{"existing project", work, 2, []string{"already exists"}, []string{"create", "--name", "Errs", "--output-dir", work}},
		{"unknown language", work, 2, []string{`language "cobol"`}, []string{"create", "--name", "X", "--language", "cobol"}},
		{"no project: deploy", outside, 4, []string{"not in an agent project", "berth create --name"}, []string{"deploy"}},
		{"no project: invoke", outside, 4, []string{"not in an agent project", "--runtime-id"}, []string{"invoke", "hi"}},
		{"no project: dev", outside, 4, []string{"not in an agent project"}, []string{"dev"}},
		{"no project: destroy", outside, 4, []string{"not in an agent project"}, []string{"destroy", "--yes"}},
		{"unknown runtime", project, 4, []string{`no runtime named "Nope"`, "runtimes: Errs"}, []string{"invoke", "--runtime", "Nope", "hi"}},
		{"unknown runtime: dev", project, 4, []string{`no runtime named "Nope"`}, []string{"dev", "--runtime", "Nope"}},
		{"server down: deploy", project, 3, []string{"not reachable at " + down, "berth server"}, []string{"deploy"}},
		{"server down: status", project, 3, []string{"not reachable", "--server URL"}, []string{"status"}},
		{"server down: invoke", project, 3, []string{"not reachable"}, []string{"invoke", "hi"}},
		{"server down: sessions", outside, 3, []string{"not reachable"}, []string{"sessions"}},
		{"invalid agentcore.json", broken, 2, []string{`entrypoint "main.go"`, `"1BAD"`, "Fix agentcore/agentcore.json"}, []string{"deploy"}},
		{"no prompt", project, 2, []string{"no prompt"}, []string{"invoke"}},
		{"short session id", project, 2, []string{"33 to 256"}, []string{"invoke", "--session-id", "abc", "hi"}},
		{"unknown flag", project, 2, []string{"unknown flag: --frobnicate"}, []string{"deploy", "--frobnicate"}},
		{"unknown command", project, 2, []string{`unknown command "deplyo"`}, []string{"deplyo"}},
		{"bad server URL", project, 2, []string{"flag --server", "http://"}, []string{"status", "--server", "localhost:4780"}},
		{"bad stream", project, 2, []string{"--stream"}, []string{"logs", "--stream", "both"}},
		{"bad port", project, 2, []string{"--port 0"}, []string{"dev", "--port", "0"}},
		{"bad config key", project, 2, []string{"unknown configuration key", "server"}, []string{"config", "set", "colour", "red"}},
		{"DEFAULT endpoint", project, 2, []string{"DEFAULT always follows"}, []string{"endpoints", "create", "DEFAULT", "--version", "1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.with(t).fails(tc.dir, tc.code, tc.want, tc.args...)
		})
	}
	if _, err := os.Stat(filepath.Join(work, "my-agent")); err == nil {
		t.Error("an invalid create left a directory behind")
	}
}
