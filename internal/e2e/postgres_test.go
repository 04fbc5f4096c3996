package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	cp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol"
)

// TestPostgresStore runs berth with --store pointing at a real PostgreSQL:
// a runtime created through the API is found again, and invoked, after a
// restart; nothing is kept in SQLite; the password in the URL appears in
// no log line.
func TestPostgresStore(t *testing.T) {
	requireSandboxes(t)
	dsn := pg.Database(t)
	b := startBerth(t, "", "--store", dsn)
	ctx := context.Background()

	id, arn := b.deploy("pgAgent", goAgent(t), deployOpts{})
	invoke := func(session string) {
		t.Helper()
		got := b.mustInvoke(invokeInput{arn: arn, session: sessionID(session), body: map[string]any{"prompt": "hi"}})
		if got["echo"] != "hi" {
			t.Errorf("invoke in session %s: answer %v does not echo the prompt", session, got)
		}
	}
	invoke("pg-before")

	b.restart()
	got, err := b.control.GetAgentRuntime(ctx, &cp.GetAgentRuntimeInput{AgentRuntimeId: aws.String(id)})
	if err != nil {
		t.Fatalf("GetAgentRuntime after restart: %v", err)
	}
	if aws.ToString(got.AgentRuntimeName) != "pgAgent" || string(got.Status) != "READY" {
		t.Errorf("after restart: runtime %s is %q, %s; want pgAgent, READY", id, aws.ToString(got.AgentRuntimeName), got.Status)
	}
	list, err := b.control.ListAgentRuntimes(ctx, &cp.ListAgentRuntimesInput{})
	if err != nil {
		t.Fatalf("ListAgentRuntimes after restart: %v", err)
	}
	if len(list.AgentRuntimes) != 1 || aws.ToString(list.AgentRuntimes[0].AgentRuntimeId) != id {
		t.Errorf("after restart: ListAgentRuntimes holds %d runtimes, want only %s", len(list.AgentRuntimes), id)
	}
	invoke("pg-after")

	if _, err := os.Stat(filepath.Join(b.dataDir, "berth.db")); !os.IsNotExist(err) {
		t.Errorf("berth.db in the data directory: %v; want none with --store postgres", err)
	}
	log := b.log()
	if pw := pg.Password(); pw != "" && strings.Contains(log, pw) {
		t.Errorf("the server log holds the database password")
	}
	if !strings.Contains(log, "store=\"postgres ") {
		t.Errorf("the server log does not say the store is PostgreSQL")
	}
}
