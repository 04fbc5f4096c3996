package e2e

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	cptypes "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol/types"

	cp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol"
)

// TestSharedCodeBundles runs two berth servers with data directories of
// their own on one PostgreSQL database, as replicas behind a load balancer
// would be: a code bundle uploaded through one runs sessions through the
// other, which has never seen it, and the other creates runtimes from its
// S3 location.
func TestSharedCodeBundles(t *testing.T) {
	requireSandboxes(t)
	dsn := pg.Database(t)
	a := startBerth(t, "", "--store", dsn)
	b := startBerth(t, "", "--store", dsn)
	agent := goAgent(t)

	// Uploaded and deployed through a; a new session through b needs the
	// bundle on b's disk.
	_, arn := a.deploy("sharedA", agent, deployOpts{})
	if got := b.mustInvoke(invokeInput{arn: arn, session: sessionID("shared-b"), body: map[string]any{"prompt": "hi"}}); got["echo"] != "hi" {
		t.Errorf("invoke through b: answer %v does not echo the prompt", got)
	}

	// b resolves the location a's upload made.
	out, err := b.control.CreateAgentRuntime(context.Background(), &cp.CreateAgentRuntimeInput{
		AgentRuntimeName: aws.String("sharedB"),
		RoleArn:          aws.String("arn:aws:iam::123456789012:role/agent"),
		AgentRuntimeArtifact: &cptypes.AgentRuntimeArtifactMemberCodeConfiguration{Value: cptypes.CodeConfiguration{
			Code:       &cptypes.CodeMemberS3{Value: cptypes.S3Location{Bucket: aws.String("agents"), Prefix: aws.String("sharedA.zip")}},
			Runtime:    agent.runtime,
			EntryPoint: agent.entryPoint,
		}},
		NetworkConfiguration: &cptypes.NetworkConfiguration{NetworkMode: cptypes.NetworkModePublic},
	})
	if err != nil {
		t.Fatalf("CreateAgentRuntime through b from a's upload: %v", err)
	}
	b.waitReady(aws.ToString(out.AgentRuntimeId), "")
	if got := a.mustInvoke(invokeInput{arn: aws.ToString(out.AgentRuntimeArn), session: sessionID("shared-a"), body: map[string]any{"prompt": "ho"}}); got["echo"] != "ho" {
		t.Errorf("invoke through a of b's runtime: answer %v does not echo the prompt", got)
	}
}
