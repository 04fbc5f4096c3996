package cli

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestReadEnvFile(t *testing.T) {
	for _, c := range []struct {
		name, content string
		want          []string
		bad           bool
	}{
		{name: "comments and blanks", content: "# secrets\n\nA=1\n", want: []string{"A=1"}},
		{name: "export and quotes", content: "export B=\"two words\"\nC='x=y'\nD=\n", want: []string{"B=two words", "C=x=y", "D="}},
		{name: "spaces around", content: "  E = 5  \n", want: []string{"E=5"}},
		{name: "no equals", content: "JUSTANAME\n", bad: true},
		{name: "bad name", content: "1X=1\n", bad: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), ".env.local")
			os.WriteFile(path, []byte(c.content), 0o600)
			got, err := readEnvFile(path)
			if c.bad {
				if ExitCode(err) != ExitUsage {
					t.Fatalf("readEnvFile = %q, %v; want a usage error", got, err)
				}
				return
			}
			if err != nil || !slices.Equal(got, c.want) {
				t.Errorf("readEnvFile = %q, %v; want %q", got, err, c.want)
			}
		})
	}
	if got, err := readEnvFile(filepath.Join(t.TempDir(), "missing")); err != nil || got != nil {
		t.Errorf("a missing file = %q, %v; want nothing", got, err)
	}
}

func TestDevEnvironment(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{envLocalFile: "API_KEY=secret\nGREETING=local\n"})
	d := &devRunner{project: &Project{Dir: root}, spec: &RuntimeSpec{EnvVars: []EnvVar{{"GREETING", "deployed"}, {"MODE", "x"}}},
		port: 9123, region: "eu-west-1"}
	env, err := d.environment()
	if err != nil {
		t.Fatal(err)
	}
	// Later entries win, as exec.Cmd applies them.
	last := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		last[k] = v
	}
	for k, want := range map[string]string{"PORT": "9123", "DOCKER_CONTAINER": "1", "LOCAL_DEV": "1", "AWS_REGION": "eu-west-1",
		"MODE": "x", "GREETING": "local", "API_KEY": "secret"} {
		if last[k] != want {
			t.Errorf("%s = %q, want %q", k, last[k], want)
		}
	}
}
