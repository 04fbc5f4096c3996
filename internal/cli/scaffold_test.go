package cli

import (
	"encoding/json"
	"go/format"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// agentcoreArrays are the top-level arrays `agentcore create` writes.
var agentcoreArrays = []string{"runtimes", "memories", "knowledgeBases", "credentials", "evaluators", "onlineEvalConfigs",
	"agentCoreGateways", "policyEngines", "configBundles", "abTests", "harnesses"}

func TestScaffold(t *testing.T) {
	common := []string{"README.md", "agentcore/.env.local", "agentcore/.gitignore", "agentcore/agentcore.json", "agentcore/aws-targets.json"}
	for _, c := range []struct {
		opts      CreateOptions
		files     []string // under app/NAME/
		runtime   map[string]any
		mustHold  map[string]string // file -> text it holds
		forbidden []string          // files that must not exist
	}{
		{
			opts:  CreateOptions{Name: "PyAgent"},
			files: []string{".berthignore", ".gitignore", "README.md", "main.py", "test_main.py"},
			runtime: map[string]any{"name": "PyAgent", "build": "CodeZip", "entrypoint": "main.py", "codeLocation": "app/PyAgent/",
				"runtimeVersion": "PYTHON_3_12", "networkMode": "PUBLIC", "protocol": "HTTP"},
			mustHold: map[string]string{"main.py": "disable_nagle_algorithm = True", "README.md": "python3.12"},
		},
		{
			opts:  CreateOptions{Name: "PyBox", Language: "Python", Build: "container"},
			files: []string{".berthignore", ".dockerignore", ".gitignore", "Dockerfile", "README.md", "main.py", "test_main.py"},
			runtime: map[string]any{"name": "PyBox", "build": "Container", "entrypoint": "main.py", "codeLocation": "app/PyBox/",
				"runtimeVersion": "PYTHON_3_12", "networkMode": "PUBLIC", "protocol": "HTTP"},
			mustHold: map[string]string{"Dockerfile": `CMD ["python", "main.py"]`},
		},
		{
			opts:  CreateOptions{Name: "TsAgent", Language: "typescript", Protocol: "http"},
			files: []string{".berthignore", ".gitignore", "README.md", "main.js", "main.test.js", "package.json"},
			runtime: map[string]any{"name": "TsAgent", "build": "CodeZip", "entrypoint": "main.js", "codeLocation": "app/TsAgent/",
				"runtimeVersion": "NODE_22", "networkMode": "PUBLIC", "protocol": "HTTP"},
			mustHold:  map[string]string{"main.js": "// @ts-check", "README.md": "no build step", "package.json": `"name": "tsagent"`},
			forbidden: []string{"Dockerfile"},
		},
		{
			opts:  CreateOptions{Name: "GoAgent", Language: "go"},
			files: []string{".dockerignore", ".gitignore", "Dockerfile", "README.md", "go.mod", "main.go", "main_test.go"},
			runtime: map[string]any{"name": "GoAgent", "build": "Container", "entrypoint": "unused.js", "codeLocation": "app/GoAgent/",
				"networkMode": "PUBLIC", "protocol": "HTTP"},
			mustHold: map[string]string{"go.mod": "module goagent", "README.md": "Getting code into", "main.go": "THE MODEL CALL GOES HERE"},
		},
	} {
		t.Run(c.opts.Name, func(t *testing.T) {
			c.opts.OutputDir = t.TempDir()
			dir, files, err := Scaffold(c.opts)
			if err != nil {
				t.Fatal(err)
			}
			want := slices.Clone(common)
			for _, f := range c.files {
				want = append(want, "app/"+c.opts.Name+"/"+f)
			}
			slices.Sort(want)
			if !slices.Equal(files, want) {
				t.Errorf("files:\n  %q\nwant\n  %q", files, want)
			}
			for _, f := range files {
				data, err := os.ReadFile(filepath.Join(dir, f))
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(string(data), "{{") || strings.Contains(string(data), "<no value>") {
					t.Errorf("%s holds an unrendered template:\n%s", f, data)
				}
			}
			for _, f := range files {
				if strings.HasSuffix(f, ".go") {
					src, _ := os.ReadFile(filepath.Join(dir, f))
					if formatted, err := format.Source(src); err != nil || string(formatted) != string(src) {
						t.Errorf("%s is not gofmt-clean (%v)", f, err)
					}
				}
			}
			for f, text := range c.mustHold {
				data, _ := os.ReadFile(filepath.Join(dir, "app", c.opts.Name, f))
				if !strings.Contains(string(data), text) {
					t.Errorf("%s lacks %q", f, text)
				}
			}
			for _, f := range c.forbidden {
				if _, err := os.Stat(filepath.Join(dir, "app", c.opts.Name, f)); err == nil {
					t.Errorf("%s exists", f)
				}
			}

			// agentcore.json is what `agentcore create` writes.
			data, _ := os.ReadFile(filepath.Join(dir, projectFile))
			var spec map[string]any
			if err := json.Unmarshal(data, &spec); err != nil {
				t.Fatal(err)
			}
			if spec["name"] != c.opts.Name || spec["version"] != 1.0 || spec["managedBy"] != "CDK" {
				t.Errorf("agentcore.json header: %v", spec)
			}
			if tags, ok := spec["tags"].(map[string]any); !ok || len(tags) != 0 {
				t.Errorf("tags = %v, want {}", spec["tags"])
			}
			for _, a := range agentcoreArrays {
				arr, ok := spec[a].([]any)
				if !ok {
					t.Errorf("agentcore.json has no array %s", a)
				} else if a != "runtimes" && len(arr) != 0 {
					t.Errorf("%s = %v, want []", a, arr)
				}
			}
			runtimes := spec["runtimes"].([]any)
			if len(runtimes) != 1 {
				t.Fatalf("runtimes = %v", runtimes)
			}
			got, _ := json.Marshal(runtimes[0])
			wantRT, _ := json.Marshal(c.runtime)
			if string(got) != string(wantRT) {
				t.Errorf("runtime entry\n  %s\nwant\n  %s", got, wantRT)
			}
			p, err := LoadProject(dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Validate(); err != nil {
				t.Errorf("the new project is not valid: %v", err)
			}
			if data, _ := os.ReadFile(filepath.Join(dir, targetsFile)); string(data) != "[]\n" {
				t.Errorf("aws-targets.json = %q", data)
			}
			if fi, err := os.Stat(filepath.Join(dir, envLocalFile)); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf(".env.local mode: %v %v", fi, err)
			}
		})
	}
}

func TestScaffoldBadInput(t *testing.T) {
	existing := t.TempDir()
	os.Mkdir(filepath.Join(existing, "Taken"), 0o755)
	for _, c := range []struct {
		opts CreateOptions
		want string
	}{
		{CreateOptions{Name: ""}, "not valid"},
		{CreateOptions{Name: "1agent"}, "start with a letter"},
		{CreateOptions{Name: "my-agent"}, "no - or _"},
		{CreateOptions{Name: "my_agent"}, "no - or _"},
		{CreateOptions{Name: strings.Repeat("a", 24)}, "at most 23"},
		{CreateOptions{Name: "Ok", Language: "rust"}, `language "rust"`},
		{CreateOptions{Name: "Ok", Protocol: "MCP"}, "HTTP agents only"},
		{CreateOptions{Name: "Ok", Build: "Zip"}, `build "Zip"`},
		{CreateOptions{Name: "Ok", Language: "go", Build: "CodeZip"}, "no Go code runtime"},
		{CreateOptions{Name: "Taken", OutputDir: existing}, "already exists"},
	} {
		if c.opts.OutputDir == "" {
			c.opts.OutputDir = t.TempDir()
		}
		_, _, err := Scaffold(c.opts)
		if ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Scaffold(%+v) = exit %d, %v; want exit %d mentioning %q", c.opts, ExitCode(err), err, ExitUsage, c.want)
		}
	}
}

// TestGeneratedAgentTests runs each generated agent's own tests with its
// own toolchain.
func TestGeneratedAgentTests(t *testing.T) {
	for _, c := range []struct {
		language string
		tool     string
		args     []string
	}{
		{"python", "python3", []string{"-m", "unittest", "-v"}},
		{"typescript", "node", []string{"--test"}},
		{"go", "go", []string{"test", "-count=1", "./..."}},
	} {
		t.Run(c.language, func(t *testing.T) {
			tool, err := exec.LookPath(c.tool)
			if err != nil {
				t.Skipf("%s is not installed: cannot run the %s agent's tests", c.tool, c.language)
			}
			dir, _, err := Scaffold(CreateOptions{Name: "Agent", Language: c.language, OutputDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(tool, c.args...)
			cmd.Dir = filepath.Join(dir, "app", "Agent")
			cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off", "PYTHONDONTWRITEBYTECODE=1")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s %s: %v\n%s", c.tool, strings.Join(c.args, " "), err, out)
			}
			t.Logf("%s %s:\n%s", c.tool, strings.Join(c.args, " "), out)
		})
	}
}
