package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	cp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol"
)

// TestCLILifecycle takes a project from `berth create` to `berth destroy`
// with the real berth binary against a real server: deploy, invoke
// (streamed), invoke again in the same session, logs, stop the session,
// change the agent and deploy a new version (DEFAULT moves, a pinned
// endpoint stays), deploy unchanged (no new version), destroy (nothing
// left).
func TestCLILifecycle(t *testing.T) {
	b := startBerth(t, "")
	c := b.cli()
	ctx := context.Background()
	work := t.TempDir()

	c.ok(work, "create", "--name", "Lifecycle", "--output-dir", work)
	project := filepath.Join(work, "Lifecycle")
	main := filepath.Join(project, "app", "Lifecycle", "main.py")

	// Settings agentcore.json carries: an endpoint pinned to version 1,
	// environment variables, a lifecycle.
	editJSON(t, filepath.Join(project, "agentcore", "agentcore.json"), func(v map[string]any) {
		rt := v["runtimes"].([]any)[0].(map[string]any)
		rt["endpoints"] = map[string]any{"stable": map[string]any{"version": 1, "description": "the first version"}}
		rt["envVars"] = []any{map[string]any{"name": "GREETING", "value": "hello"}}
		rt["lifecycleConfiguration"] = map[string]any{"idleRuntimeSessionTimeout": 120, "maxLifetime": 3600}
	})

	// Before any deploy the runtime is unknown to the server.
	c.fails(project, 4, []string{"not deployed", "berth deploy"}, "invoke", "hi")

	r := c.ok(project, "deploy")
	st := readDeployedState(t, project)
	rs := st.Targets["berth"].Resources.Runtimes["Lifecycle"]
	if rs.RuntimeID == "" || !strings.Contains(r.stdout, rs.RuntimeArn) || rs.RuntimeVersion != 1 {
		t.Fatalf("deployed state %+v does not match the deploy:\n%s", rs, r)
	}
	if !strings.Contains(r.stdout, "runtime-endpoint/DEFAULT") {
		t.Errorf("deploy does not print the DEFAULT endpoint:\n%s", r)
	}
	for _, ep := range []string{"Lifecycle/DEFAULT", "Lifecycle/stable"} {
		if st.Targets["berth"].Resources.RuntimeEndpoints[ep].EndpointArn == "" {
			t.Errorf("endpoint %s not recorded: %+v", ep, st.Targets["berth"].Resources.RuntimeEndpoints)
		}
	}
	got, err := b.control.GetAgentRuntime(ctx, &cp.GetAgentRuntimeInput{AgentRuntimeId: aws.String(rs.RuntimeID)})
	if err != nil {
		t.Fatal(err)
	}
	if got.EnvironmentVariables["GREETING"] != "hello" || aws.ToInt32(got.LifecycleConfiguration.MaxLifetime) != 3600 ||
		aws.ToInt32(got.LifecycleConfiguration.IdleRuntimeSessionTimeout) != 120 || aws.ToString(got.AgentRuntimeName) != "Lifecycle_Lifecycle" {
		t.Errorf("the runtime does not carry agentcore.json's settings: %+v", got)
	}
	if !strings.HasPrefix(rs.CodeVersionID, "sha256:") || rs.CodeBucket != "berth-lifecycle" || rs.CodeKey != "Lifecycle.zip" {
		t.Errorf("code location recorded as %s/%s@%s", rs.CodeBucket, rs.CodeKey, rs.CodeVersionID)
	}

	// Invoke: the template streams its answer (the client asks for
	// text/event-stream); the session id printed continues the session.
	r = c.ok(project, "invoke", "hello streaming")
	if r.stdout != "You said: hello streaming (message 1 of this session)\n" {
		t.Errorf("first answer:\n%s", r)
	}
	session := sessionOf(t, r)
	r = c.ok(project, "invoke", "--session-id", session, "again")
	if r.stdout != "You said: again (message 2 of this session)\n" {
		t.Errorf("second call in the session (affinity):\n%s", r)
	}
	if sessionOf(t, r) != session {
		t.Errorf("second call reports another session:\n%s", r)
	}
	r = c.ok(project, "invoke", "--session-id", session, "--output", "json", "third")
	var res struct {
		SessionID   string `json:"sessionId"`
		ContentType string `json:"contentType"`
		Events      []any  `json:"events"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("invoke -o json: %v\n%s", err, r)
	}
	var text string
	for _, e := range res.Events {
		s, _ := e.(string)
		text += s
	}
	if res.ContentType != "text/event-stream" || len(res.Events) < 3 || text != "You said: third (message 3 of this session)" || res.SessionID != session {
		t.Errorf("invoke -o json = %+v (text %q)", res, text)
	}
	r = c.ok(project, "invoke", "--session-id", session, "--json", "raw")
	if !strings.HasPrefix(r.stdout, `data: "You"`) {
		t.Errorf("invoke --json does not print the raw stream:\n%s", r)
	}

	// Logs: what the agent printed in that session (written as the agent
	// prints, so the last line may take a moment).
	waitFor(t, 10*time.Second, "the session's log", func() bool {
		r = c.ok(project, "logs", "--session", session)
		return strings.Contains(r.stdout, "turn 4: raw")
	})
	for _, want := range []string{"turn 1: hello streaming", "turn 2: again", "turn 3: third"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("logs lack %q:\n%s", want, r)
		}
	}
	r = c.ok(project, "logs", "-n", "1", "-o", "json")
	var line struct{ SessionID, Stream, Line string }
	if err := json.Unmarshal([]byte(r.stdout), &line); err != nil || line.SessionID != session || line.Line != "turn 4: raw" {
		t.Errorf("logs -n 1 -o json = %+v, %v:\n%s", line, err, r)
	}

	// Sessions: listed, then stopped.
	r = c.ok(project, "sessions")
	if !strings.Contains(r.stdout, session) {
		t.Errorf("sessions does not list %s:\n%s", session, r)
	}
	c.ok(project, "sessions", "stop", session)
	if b.hasSession(session) {
		t.Errorf("session %s still live after berth sessions stop", session)
	}
	c.fails(project, 4, []string{"no live session"}, "sessions", "stop", session)
	r = c.ok(project, "invoke", "--session-id", session, "after stop")
	if !strings.Contains(r.stdout, "message 1 of this session") {
		t.Errorf("a stopped session's id should start afresh:\n%s", r)
	}

	// Change the agent: a new version, DEFAULT follows it, stable stays.
	editFile(t, main, "You said:", "You wrote:")
	r = c.ok(project, "deploy")
	if !strings.Contains(r.stdout, "version 2") || !strings.Contains(r.stderr, "code changed") {
		t.Errorf("second deploy:\n%s", r)
	}
	if r = c.ok(project, "invoke", "x"); !strings.HasPrefix(r.stdout, "You wrote: x") {
		t.Errorf("DEFAULT does not run version 2:\n%s", r)
	}
	if r = c.ok(project, "invoke", "--endpoint", "stable", "x"); !strings.HasPrefix(r.stdout, "You said: x") {
		t.Errorf("stable does not run version 1:\n%s", r)
	}
	r = c.ok(project, "versions", "-o", "json")
	var vs struct {
		Versions []struct {
			Version   string
			Endpoints []string
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &vs); err != nil || len(vs.Versions) != 2 ||
		!slices.Equal(vs.Versions[0].Endpoints, []string{"DEFAULT"}) || !slices.Equal(vs.Versions[1].Endpoints, []string{"stable"}) {
		t.Errorf("versions = %+v, %v:\n%s", vs, err, r)
	}

	// Deploy unchanged: no new version.
	r = c.ok(project, "deploy")
	if !strings.Contains(r.stdout, "unchanged") {
		t.Errorf("third deploy:\n%s", r)
	}
	list, err := b.control.ListAgentRuntimeVersions(ctx, &cp.ListAgentRuntimeVersionsInput{AgentRuntimeId: aws.String(rs.RuntimeID)})
	if err != nil || len(list.AgentRuntimes) != 2 {
		t.Errorf("after an unchanged deploy: %d versions, %v; want 2", len(list.AgentRuntimes), err)
	}

	// Endpoints by hand: created, moved, deleted.
	c.ok(project, "endpoints", "create", "canary", "--version", "2")
	r = c.ok(project, "endpoints", "update", "stable", "--version", "2")
	if !strings.Contains(r.stderr, "agentcore.json pins stable to version 1") {
		t.Errorf("moving a pinned endpoint does not warn:\n%s", r)
	}
	r = c.ok(project, "endpoints")
	if !strings.Contains(r.stdout, "canary") {
		t.Errorf("endpoints does not list canary:\n%s", r)
	}
	c.ok(project, "endpoints", "delete", "canary")
	c.fails(project, 4, []string{"canary"}, "endpoints", "delete", "canary")
	c.ok(project, "deploy") // puts stable back on version 1
	if r = c.ok(project, "invoke", "--endpoint", "stable", "x"); !strings.HasPrefix(r.stdout, "You said: x") {
		t.Errorf("deploy did not move stable back to version 1:\n%s", r)
	}

	r = c.ok(project, "status", "-o", "json")
	var status struct {
		Runtimes []struct {
			Status, Version string
			Sessions        int
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &status); err != nil || len(status.Runtimes) != 1 ||
		status.Runtimes[0].Status != "READY" || status.Runtimes[0].Version != "2" || status.Runtimes[0].Sessions < 1 {
		t.Errorf("status = %+v, %v:\n%s", status, err, r)
	}

	// Destroy: no runtime, no code, no session, no record left.
	c.fails(project, 2, []string{"--yes"}, "destroy")
	c.ok(project, "destroy", "--yes")
	if _, err := b.control.GetAgentRuntime(ctx, &cp.GetAgentRuntimeInput{AgentRuntimeId: aws.String(rs.RuntimeID)}); apiErrorCode(err) != "ResourceNotFoundException" {
		t.Errorf("runtime still there after destroy: %v", err)
	}
	resp, err := http.Get("http://" + b.addr + "/berth/v1/code/berth-lifecycle/Lifecycle.zip")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("code object after destroy: %s, want 404", resp.Status)
	}
	waitFor(t, 10*time.Second, "no sessions", func() bool { return len(b.sessions()) == 0 })
	if blobs, _ := os.ReadDir(filepath.Join(b.dataDir, "artifacts", "blobs", "sha256")); len(blobs) != 0 {
		t.Errorf("code bundles left after destroy: %d", len(blobs))
	}
	if st := readDeployedState(t, project); len(st.Targets["berth"].Resources.Runtimes) != 0 {
		t.Errorf("deployed state after destroy: %+v", st)
	}
	c.fails(project, 4, []string{"not deployed"}, "invoke", "hi")

	b.stop()
	if left := b.leftovers(); len(left) > 0 {
		t.Errorf("left behind after destroy and stop:\n%s", strings.Join(left, "\n"))
	}
}
