package kubernetes_test

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

// buildBerth compiles cmd/berth into a temporary directory.
func buildBerth(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skipf("no go command to build berth with: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "berth")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/berthrun/berth/cmd/berth")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build berth: %v\n%s", err, out)
	}
	return bin
}

// TestDeploymentFlags runs the real binary with the Deployment's command
// line (its $(VAR)s expanded with example values) and --help: cobra parses
// every flag, refusing unknown ones and values of the wrong type, before it
// prints help. A command line with one more, unknown, flag must fail, or
// the check proves nothing.
func TestDeploymentFlags(t *testing.T) {
	ms := loadManifests(t)
	d := find[*appsv1.Deployment](t, ms, "berth")
	var found bool
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name != "berth" {
			continue
		}
		found = true
		if len(c.Command) != 0 {
			t.Errorf("container berth sets command %q: the image's entry point is berth, args are its arguments", c.Command)
		}
		args, err := expandArgs(c, map[string]string{"POD_NAME": "berth-5d8f7c9b4-x2kqz", "POD_IP": "10.244.0.17"})
		if err != nil {
			t.Fatal(err)
		}
		if len(args) == 0 || args[0] != "server" {
			t.Fatalf("args %q: want berth's server command first", args)
		}
		for _, a := range args[1:] {
			if !strings.HasPrefix(a, "--") || !strings.Contains(a, "=") {
				// --flag=value keeps each flag and its value in one
				// argument, so a missing value cannot swallow the next flag.
				t.Errorf("argument %q: want --flag=value", a)
			}
		}
		bin := buildBerth(t)
		out, err := exec.Command(bin, append(slices.Clone(args), "--help")...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Usage:") {
			t.Errorf("berth %s --help: %v\n%s", strings.Join(args, " "), err, out)
		}
		// Environment variables: Berth's own must be ones it reads (its
		// help names each), the others must be used by the args.
		for _, e := range c.Env {
			switch {
			case strings.HasPrefix(e.Name, "BERTH_") || strings.HasPrefix(e.Name, "PG"):
				if !regexp.MustCompile(`\b` + regexp.QuoteMeta(e.Name) + `\b`).Match(out) {
					t.Errorf("env %s: berth server --help does not mention it", e.Name)
				}
			case !slices.ContainsFunc(c.Args, func(a string) bool { return strings.Contains(a, "$("+e.Name+")") }):
				t.Errorf("env %s: no argument uses it", e.Name)
			}
		}
		out, err = exec.Command(bin, append(slices.Clone(args), "--no-such-flag=1", "--help")...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "unknown flag: --no-such-flag") {
			t.Errorf("berth server with an unknown flag: %v, want an unknown flag error\n%s", err, out)
		}
	}
	if !found {
		t.Fatal("the Deployment has no container named berth")
	}
}
