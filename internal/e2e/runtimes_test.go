package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	cp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol"
	cptypes "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol/types"
)

// TestOCIRuntimes runs one agent runtime on runc and one on gVisor's runsc
// (chosen with BERTH_OCI_RUNTIME) in one server, invokes both, and checks
// that each agent ran on the kernel it should: the host's under runc,
// gVisor's Sentry under runsc. A runtime that is not installed (crun, which
// the server is told lives at a missing path) and one that does not exist
// are refused at create and update time, naming the field.
func TestOCIRuntimes(t *testing.T) {
	requireSandboxes(t)
	if _, err := exec.LookPath("runsc"); err != nil {
		t.Skip("needs runsc (apt-get install runsc); .ci/run installs it")
	}
	missing := filepath.Join(t.TempDir(), "crun")
	b := startBerth(t, "", "--oci-runtime-path", "crun="+missing)
	hostKernel, err := os.ReadFile("/proc/version")
	if err != nil {
		t.Fatal(err)
	}

	var runcID string
	for _, tt := range []struct {
		runtime string
		agent   agent
		gvisor  bool
	}{{"runc", goAgent(t), false}, {"runsc", goAgent(t), true}, {"runsc", pythonAgent(t), true}} {
		t.Run(tt.runtime+"_"+tt.agent.name, func(t *testing.T) {
			b := b.with(t)
			id, arn := b.deploy(tt.agent.name+"_on_"+tt.runtime, tt.agent, deployOpts{env: map[string]string{"BERTH_OCI_RUNTIME": tt.runtime}})
			if tt.runtime == "runc" {
				runcID = id
			}
			session := sessionID(tt.runtime + "-" + tt.agent.name)
			res := b.mustInvoke(invokeInput{arn: arn, session: session, body: map[string]any{"op": "read", "path": "/proc/version"}})
			kernel, _ := res["data"].(string)
			if kernel == "" {
				t.Fatalf("the agent read no /proc/version: %v", res)
			}
			if onGVisor := kernel != string(hostKernel); onGVisor != tt.gvisor {
				t.Errorf("the agent on %s sees the kernel %q (the host's is %q): on gVisor %v, want %v",
					tt.runtime, kernel, hostKernel, onGVisor, tt.gvisor)
			}
			sentries := sentriesUnder(b.dataDir)
			if got := len(sentries) > 0; got != tt.gvisor {
				t.Errorf("gVisor Sentries of this server while a %s session runs: %v", tt.runtime, sentries)
			}
			// The session answers again, in the same sandbox.
			if res := b.mustInvoke(invokeInput{arn: arn, session: session, body: map[string]any{"prompt": "again"}}); res["echo"] != "again" {
				t.Errorf("second call answered %v", res)
			}
		})
	}

	ctx := context.Background()
	refused := func(what string, err error, want ...string) {
		t.Helper()
		var ve *cptypes.ValidationException
		if !errors.As(err, &ve) {
			t.Fatalf("%s: %v, want ValidationException", what, err)
		}
		var fields []string
		for _, f := range ve.FieldList {
			fields = append(fields, aws.ToString(f.Name)+": "+aws.ToString(f.Message))
		}
		msg := strings.Join(fields, "; ")
		for _, w := range append([]string{"environmentVariables.BERTH_OCI_RUNTIME"}, want...) {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: ValidationException %q does not say %q", what, msg, w)
			}
		}
	}
	a := goAgent(t)
	b.upload("agents", "not_installed.zip", a.bundle)
	create := func(name, runtime string) error {
		_, err := b.control.CreateAgentRuntime(ctx, &cp.CreateAgentRuntimeInput{
			AgentRuntimeName: aws.String(name),
			RoleArn:          aws.String("arn:aws:iam::123456789012:role/agent"),
			AgentRuntimeArtifact: &cptypes.AgentRuntimeArtifactMemberCodeConfiguration{Value: cptypes.CodeConfiguration{
				Code:    &cptypes.CodeMemberS3{Value: cptypes.S3Location{Bucket: aws.String("agents"), Prefix: aws.String("not_installed.zip")}},
				Runtime: a.runtime, EntryPoint: a.entryPoint,
			}},
			NetworkConfiguration: &cptypes.NetworkConfiguration{NetworkMode: cptypes.NetworkModePublic},
			EnvironmentVariables: map[string]string{"BERTH_OCI_RUNTIME": runtime},
		})
		return err
	}
	refused("create on a runtime that is not installed", create("not_installed", "crun"), missing, "apt-get install crun")
	refused("create on an unknown runtime", create("unknown_runtime", "kata"), "runc, crun, runsc")
	_, err = b.control.UpdateAgentRuntime(ctx, updateInput(runcID, a, map[string]string{"BERTH_OCI_RUNTIME": "crun"}))
	refused("update to a runtime that is not installed", err, "apt-get install crun")

	b.stop()
	if left := b.leftovers(); len(left) > 0 {
		t.Errorf("sandboxes left behind after the server stopped:\n%s", strings.Join(left, "\n"))
	}
}

// sentriesUnder returns the command lines of the gVisor Sentries whose
// runsc state is below dataDir.
func sentriesUnder(dataDir string) []string {
	var out []string
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, c := range cmdlines {
		data, err := os.ReadFile(c)
		if err != nil {
			continue
		}
		args := strings.Split(string(data), "\x00")
		if args[0] == "runsc-sandbox" && strings.Contains(string(data), "--root="+dataDir+"/") {
			out = append(out, strings.Join(args, " "))
		}
	}
	return out
}
