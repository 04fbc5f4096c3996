package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLILanguages deploys the TypeScript and Go scaffolds (the Python one
// is TestCLILifecycle's): each answers, keeps its session, deploys again
// unchanged without a new version (the Go build is reproducible), and is
// destroyed.
func TestCLILanguages(t *testing.T) {
	b := startBerth(t, "")
	for _, c := range []struct{ language, tool, name string }{
		{"typescript", "node", "TsAgent"},
		{"go", "go", "GoAgent"},
	} {
		t.Run(c.language, func(t *testing.T) {
			if _, err := exec.LookPath(c.tool); err != nil {
				t.Skipf("needs %s to deploy the %s agent", c.tool, c.language)
			}
			cl := b.with(t).cli()
			work := t.TempDir()
			cl.ok(work, "create", "--name", c.name, "--language", c.language, "--output-dir", work)
			project := filepath.Join(work, c.name)
			r := cl.ok(project, "deploy")
			if !strings.Contains(r.stdout, "version 1") {
				t.Fatalf("deploy:\n%s", r)
			}
			r = cl.ok(project, "invoke", "hi")
			if r.stdout != "You said: hi (message 1 of this session)\n" {
				t.Errorf("answer:\n%s", r)
			}
			r = cl.ok(project, "invoke", "--session-id", sessionOf(t, r), "again")
			if r.stdout != "You said: again (message 2 of this session)\n" {
				t.Errorf("second answer in the session:\n%s", r)
			}
			r = cl.ok(project, "deploy")
			if !strings.Contains(r.stdout, "version 1") || !strings.Contains(r.stdout, "unchanged") {
				t.Errorf("deploy with nothing changed:\n%s", r)
			}
			cl.ok(project, "destroy", "--yes")
		})
	}
}
