package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	dp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcore"
	cp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol"
	cptypes "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol/types"
)

var keyLine = regexp.MustCompile(`AWS_ACCESS_KEY_ID=(\S+)\s+AWS_SECRET_ACCESS_KEY=(\S+)`)

// clients returns SDK clients of b signing with the given key.
func (b *berth) clients(id, secret string) (*cp.Client, *dp.Client) {
	cfg := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(id, secret, "")}
	endpoint := "http://" + b.addr
	return cp.NewFromConfig(cfg, func(o *cp.Options) { o.BaseEndpoint = &endpoint }),
		dp.NewFromConfig(cfg, func(o *dp.Options) { o.BaseEndpoint = &endpoint })
}

// TestAuth runs Berth with --auth: the AWS SDK's SigV4 signatures with
// Berth-issued keys are accepted, anything else refused, and keys have the
// powers they were given.
func TestAuth(t *testing.T) {
	b := startBerth(t, "", "--auth")
	ctx := context.Background()
	m := keyLine.FindStringSubmatch(b.log())
	if m == nil {
		t.Fatalf("no root key printed:\n%s", b.log())
	}
	rootID, rootSecret := m[1], m[2]

	// Unsigned and wrongly signed calls are refused with AWS's shape.
	resp, err := http.Get("http://" + b.addr + "/berth/v1/sessions")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 || resp.Header.Get("X-Amzn-ErrorType") != "AccessDeniedException" {
		t.Errorf("unsigned call: %s %q", resp.Status, resp.Header.Get("X-Amzn-ErrorType"))
	}
	if resp, err := http.Get("http://" + b.addr + "/berth/v1/health"); err != nil || resp.StatusCode != 200 {
		t.Errorf("health check without a signature: %v %v", resp, err)
	}
	for name, creds := range map[string][2]string{"placeholder key": {"AKIDBERTHTEST", "secret"}, "wrong secret": {rootID, rootSecret + "x"}} {
		control, _ := b.clients(creds[0], creds[1])
		if _, err := control.ListAgentRuntimes(ctx, &cp.ListAgentRuntimesInput{}); apiErrorCode(err) != "AccessDeniedException" {
			t.Errorf("%s: %v, want AccessDeniedException", name, err)
		}
	}

	// The root key does everything; a signed upload deploys an agent.
	control, data := b.clients(rootID, rootSecret)
	bundle := goAgent(t).bundle
	req := must(http.NewRequest(http.MethodPut, "http://"+b.addr+"/berth/v1/code/agents/auth.zip", bytes.NewReader(bundle)))
	sum := sha256.Sum256(bundle)
	if err := v4.NewSigner().SignHTTP(ctx, aws.Credentials{AccessKeyID: rootID, SecretAccessKey: rootSecret}, req,
		hex.EncodeToString(sum[:]), "bedrock-agentcore", "us-east-1", time.Now()); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("signed upload: %v %v", resp, err)
	}
	created, err := control.CreateAgentRuntime(ctx, &cp.CreateAgentRuntimeInput{
		AgentRuntimeName: aws.String("auth_agent"), RoleArn: aws.String("arn:aws:iam::123456789012:role/agent"),
		AgentRuntimeArtifact: &cptypes.AgentRuntimeArtifactMemberCodeConfiguration{Value: cptypes.CodeConfiguration{
			Code:    &cptypes.CodeMemberS3{Value: cptypes.S3Location{Bucket: aws.String("agents"), Prefix: aws.String("auth.zip")}},
			Runtime: cptypes.AgentManagedRuntimeTypePython311, EntryPoint: []string{"agent"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	b.control = control
	b.waitReady(*created.AgentRuntimeId, "")
	arn := *created.AgentRuntimeArn
	invoke := func(d *dp.Client, user string) error {
		in := &dp.InvokeAgentRuntimeInput{AgentRuntimeArn: aws.String(arn), RuntimeSessionId: aws.String(sessionID("auth")),
			Payload: bytes.Repeat([]byte(" "), 2<<20), ContentType: aws.String("application/octet-stream")} // a large, spooled body
		if user != "" {
			in.RuntimeUserId = aws.String(user)
		}
		out, err := d.InvokeAgentRuntime(ctx, in)
		if err == nil {
			out.Response.Close()
		}
		return err
	}
	if err := invoke(data, "alice"); err != nil {
		t.Fatalf("root key invoke: %v", err)
	}

	// An invoke-only key, limited to this runtime.
	berthKeys := func(args ...string) string {
		out, err := exec.Command(b.bin, append([]string{"keys", "--data-dir", b.dataDir}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("berth keys %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	m = keyLine.FindStringSubmatch(berthKeys("create", "--role", "invoke", "--runtime", *created.AgentRuntimeId))
	if m == nil {
		t.Fatal("berth keys create printed no key")
	}
	invokeControl, invokeData := b.clients(m[1], m[2])
	if err := invoke(invokeData, ""); err != nil {
		t.Errorf("invoke key: %v", err)
	}
	if err := invoke(invokeData, "alice"); apiErrorCode(err) != "AccessDeniedException" {
		t.Errorf("invoke key acting for a user: %v, want AccessDeniedException", err)
	}
	if _, err := invokeControl.ListAgentRuntimes(ctx, &cp.ListAgentRuntimesInput{}); apiErrorCode(err) != "AccessDeniedException" {
		t.Errorf("invoke key on the control plane: %v, want AccessDeniedException", err)
	}
	if !strings.Contains(berthKeys("list"), m[1]) {
		t.Error("berth keys list does not show the new key")
	}
	berthKeys("revoke", m[1])
	if err := invoke(invokeData, ""); apiErrorCode(err) != "AccessDeniedException" {
		t.Errorf("revoked key: %v, want AccessDeniedException", err)
	}
}
