package e2e

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	dp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcore"
	cp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol"
	cptypes "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol/types"
)

// TestVersionsAndEndpoints shows version and endpoint semantics through the
// AWS SDK: every update is a new immutable version, DEFAULT follows the
// newest, a named endpoint stays pinned until moved, and all of it survives
// a restart.
func TestVersionsAndEndpoints(t *testing.T) {
	b := startBerth(t, "")
	ctx := context.Background()
	py := pythonAgent(t)
	id, arn := b.deploy("versions_agent", py, deployOpts{env: map[string]string{"TAG": "one"}})

	got := b.waitReady(id, "")
	if aws.ToString(got.AgentRuntimeVersion) != "1" || aws.ToString(got.AgentRuntimeName) != "versions_agent" {
		t.Fatalf("GetAgentRuntime = version %q name %q", aws.ToString(got.AgentRuntimeVersion), aws.ToString(got.AgentRuntimeName))
	}
	if want := "arn:aws:bedrock-agentcore:us-east-1:000000000000:runtime/" + id; arn != want {
		t.Errorf("ARN = %q, want %q", arn, want)
	}
	if got.LifecycleConfiguration == nil || aws.ToInt32(got.LifecycleConfiguration.IdleRuntimeSessionTimeout) != 900 ||
		aws.ToInt32(got.LifecycleConfiguration.MaxLifetime) != 28800 {
		t.Errorf("default lifecycle = %+v, want 900/28800", got.LifecycleConfiguration)
	}
	if got.CreatedAt == nil || got.LastUpdatedAt == nil {
		t.Error("timestamps missing")
	}

	tag := func(qualifier string) string {
		t.Helper()
		res := b.mustInvoke(invokeInput{arn: arn, session: sessionID("tag-" + qualifier), qualifier: qualifier,
			body: map[string]any{"op": "echo", "env": []string{"TAG"}}})
		return res["env"].(map[string]any)["TAG"].(string)
	}
	if got := tag(""); got != "one" {
		t.Fatalf("v1 TAG = %q", got)
	}

	// Pin "prod" to version 1, then update the runtime to version 2.
	ep, err := b.control.CreateAgentRuntimeEndpoint(ctx, &cp.CreateAgentRuntimeEndpointInput{
		AgentRuntimeId: aws.String(id), Name: aws.String("prod"), AgentRuntimeVersion: aws.String("1")})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(ep.TargetVersion) != "1" || !strings.HasSuffix(aws.ToString(ep.AgentRuntimeEndpointArn), "/runtime-endpoint/prod") {
		t.Errorf("CreateAgentRuntimeEndpoint = target %q arn %q", aws.ToString(ep.TargetVersion), aws.ToString(ep.AgentRuntimeEndpointArn))
	}
	upd, err := b.control.UpdateAgentRuntime(ctx, updateInput(id, py, map[string]string{"TAG": "two"}))
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(upd.AgentRuntimeVersion) != "2" {
		t.Fatalf("UpdateAgentRuntime version = %q, want 2", aws.ToString(upd.AgentRuntimeVersion))
	}
	b.waitReady(id, "2")
	def, err := b.control.GetAgentRuntimeEndpoint(ctx, &cp.GetAgentRuntimeEndpointInput{AgentRuntimeId: aws.String(id), EndpointName: aws.String("DEFAULT")})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(def.LiveVersion) != "2" || def.Status != cptypes.AgentRuntimeEndpointStatusReady {
		t.Errorf("DEFAULT = live %q status %s, want 2 READY", aws.ToString(def.LiveVersion), def.Status)
	}
	if got := tag("DEFAULT"); got != "two" {
		t.Errorf("DEFAULT TAG = %q, want two", got)
	}
	if got := tag("prod"); got != "one" {
		t.Errorf("prod TAG = %q, want one (pinned to version 1)", got)
	}

	// Version 1 is unchanged, and both versions are listed, newest first,
	// page by page.
	v1, err := b.control.GetAgentRuntime(ctx, &cp.GetAgentRuntimeInput{AgentRuntimeId: aws.String(id), AgentRuntimeVersion: aws.String("1")})
	if err != nil {
		t.Fatal(err)
	}
	if v1.EnvironmentVariables["TAG"] != "one" {
		t.Errorf("version 1 env = %v", v1.EnvironmentVariables)
	}
	var versions []string
	p := cp.NewListAgentRuntimeVersionsPaginator(b.control, &cp.ListAgentRuntimeVersionsInput{AgentRuntimeId: aws.String(id), MaxResults: aws.Int32(1)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range page.AgentRuntimes {
			versions = append(versions, aws.ToString(v.AgentRuntimeVersion))
		}
	}
	if strings.Join(versions, ",") != "2,1" {
		t.Errorf("versions = %v, want [2 1]", versions)
	}

	// Move prod to version 2.
	if _, err := b.control.UpdateAgentRuntimeEndpoint(ctx, &cp.UpdateAgentRuntimeEndpointInput{
		AgentRuntimeId: aws.String(id), EndpointName: aws.String("prod"), AgentRuntimeVersion: aws.String("2")}); err != nil {
		t.Fatal(err)
	}
	if got := tag("prod"); got != "two" {
		t.Errorf("prod TAG after moving = %q, want two", got)
	}
	eps, err := b.control.ListAgentRuntimeEndpoints(ctx, &cp.ListAgentRuntimeEndpointsInput{AgentRuntimeId: aws.String(id)})
	if err != nil {
		t.Fatal(err)
	}
	if len(eps.RuntimeEndpoints) != 2 {
		t.Errorf("endpoints = %d, want DEFAULT and prod", len(eps.RuntimeEndpoints))
	}

	// A restart keeps everything: runtime, versions, endpoints, code.
	b.restart()
	if got := tag("prod"); got != "two" {
		t.Errorf("prod TAG after restart = %q, want two", got)
	}
	v1, err = b.control.GetAgentRuntime(ctx, &cp.GetAgentRuntimeInput{AgentRuntimeId: aws.String(id), AgentRuntimeVersion: aws.String("1")})
	if err != nil || v1.EnvironmentVariables["TAG"] != "one" {
		t.Errorf("version 1 after restart: %v %v", v1, err)
	}

	// Deleting the endpoint, then the runtime.
	if _, err := b.control.DeleteAgentRuntimeEndpoint(ctx, &cp.DeleteAgentRuntimeEndpointInput{AgentRuntimeId: aws.String(id), EndpointName: aws.String("prod")}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.invoke(invokeInput{arn: arn, session: sessionID("gone"), qualifier: "prod", body: map[string]any{}}); apiErrorCode(err) != "ResourceNotFoundException" {
		t.Errorf("invoke deleted endpoint: %v, want ResourceNotFoundException", err)
	}
	del, err := b.control.DeleteAgentRuntime(ctx, &cp.DeleteAgentRuntimeInput{AgentRuntimeId: aws.String(id)})
	if err != nil {
		t.Fatal(err)
	}
	if del.Status != cptypes.AgentRuntimeStatusDeleting {
		t.Errorf("DeleteAgentRuntime status = %s", del.Status)
	}
	if _, err := b.control.GetAgentRuntime(ctx, &cp.GetAgentRuntimeInput{AgentRuntimeId: aws.String(id)}); apiErrorCode(err) != "ResourceNotFoundException" {
		t.Errorf("GetAgentRuntime after delete: %v", err)
	}
	if n := len(b.sessions()); n != 0 {
		t.Errorf("%d sessions live after the runtime was deleted", n)
	}
	if _, err := os.Stat(filepath.Join(b.dataDir, "sessions", id)); !os.IsNotExist(err) {
		t.Errorf("the deleted runtime's session logs remain (%v)", err)
	}
}

func updateInput(id string, a agent, env map[string]string) *cp.UpdateAgentRuntimeInput {
	key := id[:strings.LastIndex(id, "-")] + ".zip" // as deploy uploaded it
	return &cp.UpdateAgentRuntimeInput{
		AgentRuntimeId: aws.String(id),
		RoleArn:        aws.String("arn:aws:iam::123456789012:role/agent"),
		AgentRuntimeArtifact: &cptypes.AgentRuntimeArtifactMemberCodeConfiguration{Value: cptypes.CodeConfiguration{
			Code:       &cptypes.CodeMemberS3{Value: cptypes.S3Location{Bucket: aws.String("agents"), Prefix: aws.String(key)}},
			Runtime:    a.runtime,
			EntryPoint: a.entryPoint,
		}},
		NetworkConfiguration: &cptypes.NetworkConfiguration{NetworkMode: cptypes.NetworkModePublic},
		EnvironmentVariables: env,
	}
}

// TestControlPlaneIdempotencyAndPaging shows clientToken idempotency and
// ListAgentRuntimes pagination.
func TestControlPlaneIdempotencyAndPaging(t *testing.T) {
	b := startBerth(t, "")
	ctx := context.Background()
	b.upload("agents", "idem.zip", pythonAgent(t).bundle)
	create := func(name, token string) (*cp.CreateAgentRuntimeOutput, error) {
		return b.control.CreateAgentRuntime(ctx, &cp.CreateAgentRuntimeInput{
			AgentRuntimeName: aws.String(name),
			RoleArn:          aws.String("arn:aws:iam::123456789012:role/agent"),
			ClientToken:      aws.String(token),
			AgentRuntimeArtifact: &cptypes.AgentRuntimeArtifactMemberCodeConfiguration{Value: cptypes.CodeConfiguration{
				Code:    &cptypes.CodeMemberS3{Value: cptypes.S3Location{Bucket: aws.String("agents"), Prefix: aws.String("idem.zip")}},
				Runtime: cptypes.AgentManagedRuntimeTypePython311, EntryPoint: []string{"main.py"},
			}},
		})
	}
	first, err := create("idem_a", "token-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
	if err != nil {
		t.Fatal(err)
	}
	again, err := create("idem_a", "token-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
	if err != nil {
		t.Fatalf("retry with the same clientToken: %v", err)
	}
	if *again.AgentRuntimeId != *first.AgentRuntimeId {
		t.Errorf("retry made %s, first made %s", *again.AgentRuntimeId, *first.AgentRuntimeId)
	}
	if _, err := create("idem_b", "token-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"); apiErrorCode(err) != "ConflictException" {
		t.Errorf("same token, other parameters: %v, want ConflictException", err)
	}
	if _, err := create("idem_a", "token-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"); apiErrorCode(err) != "ConflictException" {
		t.Errorf("duplicate name: %v, want ConflictException", err)
	}
	for _, n := range []string{"idem_c", "idem_d", "idem_e"} {
		if _, err := create(n, "token-"+n+"-cccccccccccccccccccccccccccccccc"); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	p := cp.NewListAgentRuntimesPaginator(b.control, &cp.ListAgentRuntimesInput{MaxResults: aws.Int32(2)})
	pages := 0
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, r := range page.AgentRuntimes {
			names = append(names, aws.ToString(r.AgentRuntimeName))
		}
	}
	if len(names) != 4 || pages != 2 {
		t.Errorf("listed %v in %d pages, want 4 runtimes in 2 pages", names, pages)
	}
}

// TestBadInput shows that bad requests get AgentCore's error shapes, naming
// the field at fault.
func TestBadInput(t *testing.T) {
	b := startBerth(t, "")
	ctx := context.Background()
	_, arn := b.deploy("bad_input_agent", pythonAgent(t), deployOpts{})

	_, err := b.control.CreateAgentRuntime(ctx, &cp.CreateAgentRuntimeInput{
		AgentRuntimeName: aws.String("has-hyphens"),
		RoleArn:          aws.String("arn:aws:iam::123456789012:role/agent"),
		AgentRuntimeArtifact: &cptypes.AgentRuntimeArtifactMemberContainerConfiguration{Value: cptypes.ContainerConfiguration{
			ContainerUri: aws.String("example/agent:latest")}},
		LifecycleConfiguration: &cptypes.LifecycleConfiguration{IdleRuntimeSessionTimeout: aws.Int32(100), MaxLifetime: aws.Int32(50)},
	})
	var ve *cptypes.ValidationException
	if !errors.As(err, &ve) {
		t.Fatalf("invalid name: %v, want ValidationException", err)
	}
	fields := map[string]bool{}
	for _, f := range ve.FieldList {
		fields[aws.ToString(f.Name)] = true
	}
	if !fields["agentRuntimeName"] || !fields["lifecycleConfiguration.idleRuntimeSessionTimeout"] {
		t.Errorf("ValidationException fields = %v, want agentRuntimeName and lifecycleConfiguration.idleRuntimeSessionTimeout", fields)
	}

	// A runtime whose code was never uploaded fails with a reason that says
	// what to do.
	created, err := b.control.CreateAgentRuntime(ctx, &cp.CreateAgentRuntimeInput{
		AgentRuntimeName: aws.String("missing_code"),
		RoleArn:          aws.String("arn:aws:iam::123456789012:role/agent"),
		AgentRuntimeArtifact: &cptypes.AgentRuntimeArtifactMemberCodeConfiguration{Value: cptypes.CodeConfiguration{
			Code:    &cptypes.CodeMemberS3{Value: cptypes.S3Location{Bucket: aws.String("agents"), Prefix: aws.String("never-uploaded.zip")}},
			Runtime: cptypes.AgentManagedRuntimeTypePython312, EntryPoint: []string{"main.py"},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the runtime to fail", func() bool {
		got, err := b.control.GetAgentRuntime(ctx, &cp.GetAgentRuntimeInput{AgentRuntimeId: created.AgentRuntimeId})
		if err != nil || got.Status != cptypes.AgentRuntimeStatusCreateFailed {
			return false
		}
		if reason := aws.ToString(got.FailureReason); !strings.Contains(reason, "s3://agents/never-uploaded.zip") || !strings.Contains(reason, "upload") {
			t.Errorf("failureReason %q does not name the missing bundle and how to upload it", reason)
		}
		return true
	})

	// Unsafe bundles are refused at upload.
	var zbuf bytes.Buffer
	zw := zip.NewWriter(&zbuf)
	w, _ := zw.Create("../../etc/cron.d/evil")
	w.Write([]byte("* * * * * root rm -rf /"))
	zw.Close()
	resp, err := http.DefaultClient.Do(must(http.NewRequest(http.MethodPut, "http://"+b.addr+"/berth/v1/code/agents/evil.zip", &zbuf)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), "escapes the bundle") {
		t.Errorf("zip-slip upload: %s %s, want 400 saying the entry escapes the bundle", resp.Status, body)
	}

	if _, err := b.control.GetAgentRuntime(ctx, &cp.GetAgentRuntimeInput{AgentRuntimeId: aws.String("nosuch-abcdefghij")}); apiErrorCode(err) != "ResourceNotFoundException" {
		t.Errorf("unknown runtime: %v", err)
	}
	unknownARN := strings.Replace(arn, "bad_input_agent", "nosuch_agent", 1)
	cases := []struct {
		name string
		in   invokeInput
		want string
	}{
		{"unknown runtime", invokeInput{arn: unknownARN, session: sessionID("x")}, "ResourceNotFoundException"},
		{"unknown qualifier", invokeInput{arn: arn, session: sessionID("x"), qualifier: "nosuch"}, "ResourceNotFoundException"},
		{"short session id", invokeInput{arn: arn, session: "too-short"}, "ValidationException"},
		{"malformed ARN", invokeInput{arn: "arn:aws:s3:::bucket", session: sessionID("x")}, "ValidationException"},
	}
	for _, c := range cases {
		c.in.body = map[string]any{}
		if _, err := b.invoke(c.in); apiErrorCode(err) != c.want {
			t.Errorf("%s: %v, want %s", c.name, err, c.want)
		}
	}

	// Malformed JSON and an oversized payload, sent by hand.
	resp, err = http.DefaultClient.Do(must(http.NewRequest(http.MethodPut, "http://"+b.addr+"/runtimes/", strings.NewReader(`{"agentRuntimeName":`))))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 || resp.Header.Get("X-Amzn-ErrorType") != "ValidationException" || resp.Header.Get("X-Amzn-Requestid") == "" {
		t.Errorf("malformed JSON: %s %q", resp.Status, resp.Header.Get("X-Amzn-ErrorType"))
	}
	// Only the headers of the oversized call are sent: Berth must refuse it
	// from its Content-Length alone, without reading 100 MB.
	conn, err := net.Dial("tcp", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /runtimes/%s/invocations HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\n"+
		"X-Amzn-Bedrock-AgentCore-Runtime-Session-Id: %s\r\nContent-Length: %d\r\n\r\n", url.PathEscape(arn), b.addr, sessionID("big"), 100<<20+1)
	resp, err = http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 || resp.Header.Get("X-Amzn-ErrorType") != "ValidationException" {
		t.Errorf("oversized payload: %s %q", resp.Status, resp.Header.Get("X-Amzn-ErrorType"))
	}
}

// TestCrashRecovery: a Berth killed with live sessions leaves sandboxes
// behind; the next start on the same data directory removes them all and
// serves the same runtimes.
func TestCrashRecovery(t *testing.T) {
	b := startBerth(t, "")
	_, arn := b.deploy("crash_recovery", goAgent(t), deployOpts{})
	for i := range 3 {
		b.mustInvoke(invokeInput{arn: arn, session: sessionID(fmt.Sprint("crash", i)), body: map[string]any{}})
	}
	b.cmd.Process.Kill()
	<-b.exited
	if left := b.leftovers(); len(left) == 0 {
		t.Fatal("a killed Berth left no sandboxes behind: this test checks nothing")
	}
	b.start()
	// Killed processes linger as zombies until the host's init reaps them.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		left := b.leftovers()
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a restart, sandboxes of the killed server remain:\n%s", strings.Join(left, "\n"))
		}
	}
	// Runtimes are still served, by ID and account too.
	id := runtimeIDOf(arn)
	out, err := b.data.InvokeAgentRuntime(context.Background(), &dp.InvokeAgentRuntimeInput{
		AgentRuntimeArn: aws.String(id), AccountId: aws.String("000000000000"),
		RuntimeSessionId: aws.String(sessionID("after-crash")), Payload: []byte(`{}`), ContentType: aws.String("application/json")})
	if err != nil {
		t.Fatalf("invoke by runtime ID and account after restart: %v", err)
	}
	out.Response.Close()
}
