package cli

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// validRuntime is a runtime entry as `agentcore create` writes it.
func validRuntime() RuntimeSpec {
	return RuntimeSpec{Name: "Agent", Build: "CodeZip", Entrypoint: "main.py", CodeLocation: "app/Agent/",
		RuntimeVersion: "PYTHON_3_14", NetworkMode: "PUBLIC", Protocol: "HTTP"}
}

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		name   string
		edit   func(*ProjectSpec)
		errors []string // each must appear; none for a valid project
	}{
		{name: "agentcore create's output", edit: func(*ProjectSpec) {}},
		{name: "every setting Berth reads", edit: func(p *ProjectSpec) {
			r := &p.Runtimes[0]
			r.Entrypoint = "src/main.py:app"
			r.EnvVars = []EnvVar{{"GREETING", "hi"}, {"_X", ""}}
			r.RequestHeaderAllowlist = []string{"Authorization", headerPrefix + "Tenant"}
			r.LifecycleConfiguration = &LifecycleSpec{IdleRuntimeSessionTimeout: 60, MaxLifetime: 3600}
			r.Endpoints = map[string]EndpointSpec{"prod": {Version: 1, Description: "stable"}}
		}},
		{name: "Go container with a placeholder entrypoint", edit: func(p *ProjectSpec) {
			p.Runtimes[0].Build, p.Runtimes[0].Entrypoint, p.Runtimes[0].RuntimeVersion = "Container", "unused.js", ""
		}},
		{name: "project name", edit: func(p *ProjectSpec) { p.Name = "my-project" }, errors: []string{`name "my-project"`}},
		{name: "project name too long", edit: func(p *ProjectSpec) { p.Name = strings.Repeat("a", 24) }, errors: []string{"at most 23"}},
		{name: "version", edit: func(p *ProjectSpec) { p.Version = 0 }, errors: []string{"version must be"}},
		{name: "managedBy", edit: func(p *ProjectSpec) { p.ManagedBy = "Terraform" }, errors: []string{"managedBy"}},
		{name: "runtime name", edit: func(p *ProjectSpec) { p.Runtimes[0].Name = "my-agent" }, errors: []string{`name "my-agent"`}},
		{name: "deployed name too long", edit: func(p *ProjectSpec) { p.Runtimes[0].Name = strings.Repeat("a", 44) },
			errors: []string{"AgentCore allows 48"}},
		{name: "duplicate runtime", edit: func(p *ProjectSpec) { p.Runtimes = append(p.Runtimes, p.Runtimes[0]) }, errors: []string{"listed twice"}},
		{name: "build", edit: func(p *ProjectSpec) { p.Runtimes[0].Build = "Zip" }, errors: []string{`build "Zip"`}},
		{name: "entrypoint", edit: func(p *ProjectSpec) { p.Runtimes[0].Entrypoint = "main.go" }, errors: []string{`entrypoint "main.go"`}},
		{name: "entrypoint handler", edit: func(p *ProjectSpec) { p.Runtimes[0].Entrypoint = "main.py:1app" }, errors: []string{"entrypoint"}},
		{name: "codeLocation", edit: func(p *ProjectSpec) { p.Runtimes[0].CodeLocation = "" }, errors: []string{"codeLocation is required"}},
		{name: "codeLocation outside", edit: func(p *ProjectSpec) { p.Runtimes[0].CodeLocation = "../elsewhere" }, errors: []string{"inside the project"}},
		{name: "runtimeVersion", edit: func(p *ProjectSpec) { p.Runtimes[0].RuntimeVersion = "PYTHON_2_7" }, errors: []string{"runtimeVersion"}},
		{name: "env var name", edit: func(p *ProjectSpec) { p.Runtimes[0].EnvVars = []EnvVar{{"1BAD", "x"}} }, errors: []string{`"1BAD"`}},
		{name: "network mode", edit: func(p *ProjectSpec) { p.Runtimes[0].NetworkMode = "PRIVATE" }, errors: []string{"networkMode"}},
		{name: "protocol", edit: func(p *ProjectSpec) { p.Runtimes[0].Protocol = "GRPC" }, errors: []string{"protocol"}},
		{name: "header", edit: func(p *ProjectSpec) { p.Runtimes[0].RequestHeaderAllowlist = []string{"X-Api-Key"} }, errors: []string{`"X-Api-Key"`}},
		{name: "too many headers", edit: func(p *ProjectSpec) {
			for range 21 {
				p.Runtimes[0].RequestHeaderAllowlist = append(p.Runtimes[0].RequestHeaderAllowlist, "Authorization")
			}
		}, errors: []string{"at most 20"}},
		{name: "lifecycle range", edit: func(p *ProjectSpec) {
			p.Runtimes[0].LifecycleConfiguration = &LifecycleSpec{IdleRuntimeSessionTimeout: 30, MaxLifetime: 30000}
		}, errors: []string{"idleRuntimeSessionTimeout 30", "maxLifetime 30000"}},
		{name: "idle beyond max", edit: func(p *ProjectSpec) {
			p.Runtimes[0].LifecycleConfiguration = &LifecycleSpec{IdleRuntimeSessionTimeout: 900, MaxLifetime: 600}
		}, errors: []string{"must not exceed maxLifetime"}},
		{name: "endpoints", edit: func(p *ProjectSpec) {
			p.Runtimes[0].Endpoints = map[string]EndpointSpec{"DEFAULT": {Version: 1}, "bad-name": {Version: 1}, "zero": {}}
		}, errors: []string{"DEFAULT always follows", `endpoint name "bad-name"`, `endpoint "zero": version`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := &Project{Dir: "/p", Spec: ProjectSpec{Name: "Proj", Version: 1, ManagedBy: "CDK", Runtimes: []RuntimeSpec{validRuntime()}}}
			c.edit(&p.Spec)
			err := p.Validate()
			if len(c.errors) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate = %v, want a *ValidationError", err)
			}
			for _, want := range c.errors {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q:\n%v", want, err)
				}
			}
		})
	}
}

func TestFindProject(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{
		projectFile:                     `{"name": "Proj", "version": 1, "managedBy": "CDK", "runtimes": [], "memories": []}`,
		"app/Proj/deep/dir/x.py":        "",
		"elsewhere/agentcore/readme.md": "",
	})
	for _, dir := range []string{root, filepath.Join(root, "app/Proj/deep/dir")} {
		p, err := FindProject(dir)
		if err != nil || p.Dir != root || p.Spec.Name != "Proj" {
			t.Errorf("FindProject(%s) = %+v, %v; want the project at %s", dir, p, err, root)
		}
	}
	if _, err := FindProject(filepath.Join(root, "elsewhere")); err != nil {
		t.Errorf("FindProject below the project: %v", err)
	}
	if _, err := FindProject(t.TempDir()); !errors.Is(err, ErrNoProject) {
		t.Errorf("FindProject outside a project = %v, want ErrNoProject", err)
	}
	bad := t.TempDir()
	writeTree(t, bad, map[string]string{projectFile: "{not json"})
	if _, err := FindProject(bad); err == nil || !strings.Contains(err.Error(), "not valid JSON") {
		t.Errorf("FindProject with a broken agentcore.json = %v", err)
	}
}

func TestProjectRuntime(t *testing.T) {
	p := &Project{Spec: ProjectSpec{Name: "P", Runtimes: []RuntimeSpec{{Name: "a"}}}}
	if r, err := p.Runtime(""); err != nil || r.Name != "a" {
		t.Errorf("only runtime: %v, %v", r, err)
	}
	if _, err := p.Runtime("b"); ExitCode(err) != ExitNotFound {
		t.Errorf("unknown runtime: exit %d (%v)", ExitCode(err), err)
	}
	p.Spec.Runtimes = append(p.Spec.Runtimes, RuntimeSpec{Name: "b"})
	if _, err := p.Runtime(""); ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), "--runtime") {
		t.Errorf("two runtimes, none chosen: exit %d (%v)", ExitCode(err), err)
	}
	p.Spec.Runtimes = nil
	if _, err := p.Runtime(""); ExitCode(err) != ExitNotFound {
		t.Errorf("no runtimes: exit %d (%v)", ExitCode(err), err)
	}
}

// TestDeployedState checks that Berth's records go where AgentCore keeps
// them and that what it does not know (AgentCore's own targets and
// resources) survives a rewrite.
func TestDeployedState(t *testing.T) {
	root := t.TempDir()
	agentcoreState := `{
  "targets": {
    "default": {"resources": {"runtimes": {"Agent": {"runtimeId": "Proj_Agent-AWS0000000", "runtimeArn": "arn:aws:x", "roleArn": "arn:aws:iam::1:role/r"}},
                              "memories": {"m": {"memoryId": "m-1", "memoryArn": "arn:m"}}, "stackName": "AgentCore-Proj-default"}},
    "berth": {"resources": {"stackName": "kept"}}
  },
  "futureMember": 1
}`
	writeTree(t, root, map[string]string{deployedFile: agentcoreState})
	p := &Project{Dir: root}
	st, err := p.LoadDeployedState()
	if err != nil {
		t.Fatal(err)
	}
	res, err := st.Resources("berth")
	if err != nil || len(res.Runtimes) != 0 {
		t.Fatalf("Resources(berth) = %+v, %v", res, err)
	}
	res.Runtimes["Agent"] = RuntimeState{RuntimeID: "Proj_Agent-BERTH00000", RuntimeArn: "arn:berth", RoleArn: "arn:role", RuntimeVersion: 2}
	res.RuntimeEndpoints[endpointKey("Agent", "prod")] = EndpointState{EndpointID: "prod-1", EndpointArn: "arn:ep"}
	if err := st.SetResources("berth", res); err != nil {
		t.Fatal(err)
	}

	data, _ := os.ReadFile(filepath.Join(root, deployedFile))
	var got struct {
		Targets map[string]struct {
			Resources map[string]json.RawMessage `json:"resources"`
		} `json:"targets"`
		FutureMember int `json:"futureMember"`
	}
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if got.FutureMember != 1 || len(got.Targets["default"].Resources) != 3 || string(got.Targets["berth"].Resources["stackName"]) != `"kept"` {
		t.Errorf("members Berth does not own were lost:\n%s", data)
	}
	if !strings.Contains(string(got.Targets["default"].Resources["runtimes"]), "Proj_Agent-AWS0000000") {
		t.Errorf("AgentCore's default target was changed:\n%s", data)
	}
	again, err := p.LoadDeployedState()
	if err != nil {
		t.Fatal(err)
	}
	res2, _ := again.Resources("berth")
	if res2.Runtimes["Agent"].RuntimeID != "Proj_Agent-BERTH00000" || res2.Runtimes["Agent"].RuntimeVersion != 2 ||
		res2.RuntimeEndpoints["Agent/prod"].EndpointArn != "arn:ep" {
		t.Errorf("read back %+v", res2)
	}

	// Removing everything leaves the target with only what Berth did not own.
	if err := again.SetResources("berth", TargetResources{}); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(filepath.Join(root, deployedFile))
	if strings.Contains(string(data), "BERTH00000") || !strings.Contains(string(data), `"kept"`) {
		t.Errorf("after clearing:\n%s", data)
	}
}
