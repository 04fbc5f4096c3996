package cli

import (
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	cp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol"
	cptypes "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol/types"
)

// deployedAs is what GetAgentRuntime returns for a runtime deployed from d,
// with the server's defaults filled in.
func deployedAs(d desiredRuntime) *cp.GetAgentRuntimeOutput {
	out := &cp.GetAgentRuntimeOutput{
		AgentRuntimeArtifact:       d.artifact(),
		RoleArn:                    aws.String(d.RoleArn),
		NetworkConfiguration:       &cptypes.NetworkConfiguration{NetworkMode: cptypes.NetworkMode(d.NetworkMode)},
		ProtocolConfiguration:      &cptypes.ProtocolConfiguration{ServerProtocol: cptypes.ServerProtocol(d.Protocol), Port: aws.Int32(8080), Path: aws.String("/invocations")},
		LifecycleConfiguration:     d.lifecycle(),
		EnvironmentVariables:       d.Env,
		RequestHeaderConfiguration: d.headerConfig(),
	}
	if d.Description != "" {
		out.Description = aws.String(d.Description)
	}
	return out
}

func TestChanges(t *testing.T) {
	base := desiredRuntime{RoleArn: defaultRoleArn, Bucket: "berth-p", Key: "a.zip", VersionID: "sha256:aa", Runtime: "PYTHON_3_12",
		EntryPoint: []string{"main.py"}, NetworkMode: "PUBLIC", Protocol: "HTTP", Lifecycle: normalizedLifecycle(nil), Env: map[string]string{}}
	for _, c := range []struct {
		name string
		edit func(*desiredRuntime)
		want []string
	}{
		{"nothing", func(*desiredRuntime) {}, nil},
		{"no env is no env", func(d *desiredRuntime) { d.Env = nil }, nil},
		{"code", func(d *desiredRuntime) { d.VersionID = "sha256:bb" }, []string{"code"}},
		{"entrypoint and runtime", func(d *desiredRuntime) { d.EntryPoint, d.Runtime = []string{"app.py"}, "PYTHON_3_13" },
			[]string{"runtimeVersion", "entrypoint"}},
		{"env", func(d *desiredRuntime) { d.Env = map[string]string{"A": "1"} }, []string{"envVars"}},
		{"lifecycle", func(d *desiredRuntime) { d.Lifecycle.MaxLifetime = 3600 }, []string{"lifecycleConfiguration"}},
		{"headers", func(d *desiredRuntime) { d.Headers = []string{"Authorization"} }, []string{"requestHeaderAllowlist"}},
		{"description and role", func(d *desiredRuntime) { d.Description, d.RoleArn = "new", "arn:aws:iam::1:role/x" },
			[]string{"description", "executionRoleArn"}},
		{"protocol", func(d *desiredRuntime) { d.Protocol = "MCP" }, []string{"protocol"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			want := base
			want.Env = map[string]string{}
			c.edit(&want)
			if got := want.changes(deployedAs(base)); !slices.Equal(got, c.want) {
				t.Errorf("changes = %q, want %q", got, c.want)
			}
		})
	}
	// A container runtime (deployed by something else) always differs.
	got := base.changes(&cp.GetAgentRuntimeOutput{AgentRuntimeArtifact: &cptypes.AgentRuntimeArtifactMemberContainerConfiguration{}})
	if !slices.Contains(got, "code") {
		t.Errorf("changes against a container runtime = %q", got)
	}

	// berth deploy --image compares the image only (and the settings).
	image := desiredRuntime{RoleArn: defaultRoleArn, ContainerURI: "berth.local/p_a@sha256:aa", NetworkMode: "PUBLIC", Protocol: "HTTP",
		Lifecycle: normalizedLifecycle(nil), Env: map[string]string{}}
	for _, c := range []struct {
		name     string
		deployed *cp.GetAgentRuntimeOutput
		want     []string
	}{
		{"same image", deployedAs(image), nil},
		{"new image", deployedAs(desiredRuntime{RoleArn: defaultRoleArn, ContainerURI: "berth.local/p_a@sha256:bb", NetworkMode: "PUBLIC",
			Protocol: "HTTP", Lifecycle: normalizedLifecycle(nil)}), []string{"image"}},
		{"was code", deployedAs(base), []string{"image"}},
	} {
		if got := image.changes(c.deployed); !slices.Equal(got, c.want) {
			t.Errorf("%s: changes = %q, want %q", c.name, got, c.want)
		}
	}
	if art, ok := image.artifact().(*cptypes.AgentRuntimeArtifactMemberContainerConfiguration); !ok || aws.ToString(art.Value.ContainerUri) != image.ContainerURI {
		t.Errorf("artifact of an image = %#v", image.artifact())
	}
}

func TestNormalizedLifecycle(t *testing.T) {
	for _, c := range []struct {
		in   *LifecycleSpec
		want LifecycleSpec
	}{
		{nil, LifecycleSpec{900, 28800}},
		{&LifecycleSpec{}, LifecycleSpec{900, 28800}},
		{&LifecycleSpec{MaxLifetime: 600}, LifecycleSpec{600, 600}},
		{&LifecycleSpec{MaxLifetime: 3600}, LifecycleSpec{900, 3600}},
		{&LifecycleSpec{IdleRuntimeSessionTimeout: 120}, LifecycleSpec{120, 28800}},
		{&LifecycleSpec{IdleRuntimeSessionTimeout: 60, MaxLifetime: 120}, LifecycleSpec{60, 120}},
	} {
		if got := normalizedLifecycle(c.in); got != c.want {
			t.Errorf("normalizedLifecycle(%+v) = %+v, want %+v", c.in, got, c.want)
		}
	}
}

func TestCodeRuntime(t *testing.T) {
	for _, c := range []struct{ version, entry, want string }{
		{"PYTHON_3_14", "main.py", "PYTHON_3_14"},
		{"NODE_20", "main.js", "NODE_22"},
		{"", "index.js", "NODE_22"},
		{"", "main.py", "PYTHON_3_12"},
		{"", goBinary, "PYTHON_3_12"},
	} {
		if got := codeRuntime(c.version, c.entry); got != c.want {
			t.Errorf("codeRuntime(%q, %q) = %q, want %q", c.version, c.entry, got, c.want)
		}
	}
}

func TestRuntimeIDOf(t *testing.T) {
	for in, want := range map[string]string{
		"Proj_Agent-abcdefghij": "Proj_Agent-abcdefghij",
		"arn:aws:bedrock-agentcore:us-east-1:000000000000:runtime/Proj_Agent-abcdefghij":                          "Proj_Agent-abcdefghij",
		"arn:aws:bedrock-agentcore:us-east-1:000000000000:runtime/Proj_Agent-abcdefghij/runtime-endpoint/DEFAULT": "Proj_Agent-abcdefghij",
	} {
		if got := runtimeIDOf(in); got != want {
			t.Errorf("runtimeIDOf(%q) = %q, want %q", in, got, want)
		}
	}
}
