package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	cp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol"
	cptypes "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol/types"
)

// TestNetworkModes checks, through the API, how a runtime's network
// configuration reaches its sandboxes: PUBLIC gives an interface beyond
// loopback (outbound), BERTH_NETWORK=none loopback only, a bad
// BERTH_NETWORK_ALLOW is refused naming it; and a server started with
// --sandbox-outbound=false runs PUBLIC runtimes without network and fails
// those asking for outbound access. (What each mode lets a sandbox reach is
// tested on the driver, by sandboxtest.RunNetwork.)
func TestNetworkModes(t *testing.T) {
	b := startBerth(t, "")
	py := pythonAgent(t)
	interfaces := func(b *berth, arn string) string {
		t.Helper()
		dev, _ := b.mustInvoke(invokeInput{arn: arn, session: sessionID("net"), body: map[string]any{"op": "read", "path": "/proc/net/dev"}})["data"].(string)
		var names []string
		for _, line := range strings.Split(dev, "\n")[2:] {
			if name, _, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
				names = append(names, name)
			}
		}
		return strings.Join(names, " ")
	}

	_, public := b.with(t).deploy("net_public", py, deployOpts{})
	if got := interfaces(b, public); got != "lo eth0" && got != "eth0 lo" {
		t.Errorf("a PUBLIC runtime's sandbox has interfaces %q, want lo and eth0 (outbound)", got)
	}
	_, none := b.with(t).deploy("net_none", py, deployOpts{env: map[string]string{"BERTH_NETWORK": "none"}})
	if got := interfaces(b, none); got != "lo" {
		t.Errorf("a BERTH_NETWORK=none runtime's sandbox has interfaces %q, want lo only", got)
	}
	_, err := b.control.CreateAgentRuntime(context.Background(), runtimeInput("net_bad", map[string]string{
		"BERTH_NETWORK": "allowlist", "BERTH_NETWORK_ALLOW": "api.example.com:https"}))
	if apiErrorCode(err) != "ValidationException" || !strings.Contains(err.Error(), "environmentVariables.BERTH_NETWORK_ALLOW") {
		t.Errorf("CreateAgentRuntime with a bad allow list = %v, want a ValidationException naming environmentVariables.BERTH_NETWORK_ALLOW", err)
	}
	b.stop()

	closed := startBerth(t, "", "--sandbox-outbound=false")
	_, public = closed.with(t).deploy("net_closed", py, deployOpts{})
	if got := interfaces(closed, public); got != "lo" {
		t.Errorf("with --sandbox-outbound=false a PUBLIC runtime's sandbox has interfaces %q, want lo only", got)
	}
	out, err := closed.control.CreateAgentRuntime(context.Background(), runtimeInput("net_refused", map[string]string{"BERTH_NETWORK": "outbound"}))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, err := closed.control.GetAgentRuntime(context.Background(), &cp.GetAgentRuntimeInput{AgentRuntimeId: out.AgentRuntimeId})
		if err != nil {
			t.Fatal(err)
		}
		if got.Status == cptypes.AgentRuntimeStatusCreateFailed {
			if reason := aws.ToString(got.FailureReason); !strings.Contains(reason, "BERTH_NETWORK") || !strings.Contains(reason, "--sandbox-outbound=false") {
				t.Errorf("failure reason %q does not name BERTH_NETWORK and the server's setting", reason)
			}
			break
		}
		if got.Status == cptypes.AgentRuntimeStatusReady || time.Now().After(deadline) {
			t.Fatalf("a runtime asking for outbound access on a server without it is %s, want CREATE_FAILED", got.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runtimeInput is a CreateAgentRuntime call for a code bundle that need not
// exist (the calls it is used for fail before it is fetched, or at that).
func runtimeInput(name string, env map[string]string) *cp.CreateAgentRuntimeInput {
	return &cp.CreateAgentRuntimeInput{
		AgentRuntimeName: aws.String(name),
		RoleArn:          aws.String("arn:aws:iam::123456789012:role/agent"),
		AgentRuntimeArtifact: &cptypes.AgentRuntimeArtifactMemberCodeConfiguration{Value: cptypes.CodeConfiguration{
			Code:       &cptypes.CodeMemberS3{Value: cptypes.S3Location{Bucket: aws.String("agents"), Prefix: aws.String(name + ".zip")}},
			Runtime:    cptypes.AgentManagedRuntimeTypePython311,
			EntryPoint: []string{"main.py"},
		}},
		NetworkConfiguration: &cptypes.NetworkConfiguration{NetworkMode: cptypes.NetworkModePublic},
		EnvironmentVariables: env,
	}
}
