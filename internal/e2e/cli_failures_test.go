package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIFailures: a version that fails to prepare and an agent that dies
// at start give their reason, the agent's log and exit code 5.
func TestCLIFailures(t *testing.T) {
	b := startBerth(t, "")
	c := b.cli()
	work := t.TempDir()
	c.ok(work, "create", "--name", "Broken", "--output-dir", work)
	project := filepath.Join(work, "Broken")
	code := filepath.Join(project, "app", "Broken")

	// The entry point left out of the bundle: preparation fails.
	if err := os.WriteFile(filepath.Join(code, ".berthignore"), []byte("main.py\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.fails(project, 5, []string{"CREATE_FAILED", "not in the code bundle", "is it listed in app/Broken/.berthignore"}, "deploy")
	r := c.ok(project, "status")
	if !strings.Contains(r.stdout, "CREATE_FAILED") {
		t.Errorf("status does not show the failure:\n%s", r)
	}

	// Fixed, but the agent dies at start: the call fails with the end of
	// its log.
	os.Remove(filepath.Join(code, ".berthignore"))
	editFile(t, filepath.Join(code, "main.py"), "def main():\n", "def main():\n    raise SystemExit(\"boom: MODEL_API_KEY is not set\")\n")
	r = c.ok(project, "deploy")
	if !strings.Contains(r.stdout, "READY") {
		t.Errorf("deploy after the failure:\n%s", r)
	}
	c.fails(project, 5, []string{"the agent failed", "boom: MODEL_API_KEY is not set", "berth logs --session"}, "invoke", "hi")

	c.fails(project, 4, []string{"Nope_Nope-0123456789"}, "invoke", "--runtime-id", "Nope_Nope-0123456789", "hi")
	c.fails(project, 4, []string{"no runtime named"}, "logs", "--runtime", "Nope")
	c.ok(project, "destroy", "--yes")
}
