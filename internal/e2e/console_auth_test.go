package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	cp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol"
	cptypes "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol/types"
	"github.com/chromedp/chromedp"
)

// TestConsoleAuth drives the console against a Berth that requires signed
// requests: unsigned it says so and points at the credentials form; with a
// wrong secret it names the refused key; with the root key it lists the
// runtime and the inspector gets an answer; signing out forgets the key.
func TestConsoleAuth(t *testing.T) {
	chromium := requireChromium(t)
	b := startBerth(t, "", "--auth")
	m := keyLine.FindStringSubmatch(b.log())
	if m == nil {
		t.Fatalf("no root key printed:\n%s", b.log())
	}
	keyID, secret := m[1], m[2]
	b.control, b.data = b.clients(keyID, secret)
	id, arn := deploySigned(t, b, keyID, secret, "console_auth_agent", pythonAgent(t))
	base := "http://" + b.addr
	br := newBrowser(t, chromium)
	shots := artifactDir(t)
	row := fmt.Sprintf(`tr[data-runtime-id=%q]`, id)

	// Unsigned: the runtimes view is refused and says what to do.
	br.do(chromedp.EmulateViewport(1440, 1000), chromedp.Navigate(base+"/console/"),
		chromedp.WaitVisible(chromedp.CSS(`main .error-hint`)))
	if text := br.text(`main .notice.error`); !containsAll(text, "AccessDeniedException", "HTTP 403",
		"requires signed requests", "berth keys create", "root key printed at first start") {
		t.Errorf("unsigned console shows %q, want the 403 and how to sign in", text)
	}
	br.shot(shots, "console-auth-denied.png")
	if text := br.text("#identity"); !strings.Contains(text, "unsigned") {
		t.Errorf("sidebar reads %q, want it to say calls are unsigned", text)
	}

	// A wrong secret: the key is named as refused.
	signIn := func(secret string) {
		br.do(chromedp.Click(chromedp.CSS(`main .error-hint a[href^="#/credentials"]`)),
			chromedp.WaitVisible(chromedp.CSS("#credentials-form")),
			fill("#cred-key-id", keyID), fill("#cred-secret", secret),
			chromedp.Click(chromedp.CSS("#cred-save")))
	}
	signIn(secret + "x")
	br.do(chromedp.WaitVisible(chromedp.CSS(`main .error-hint`)))
	if text := br.text(`main .error-hint`); !containsAll(text, keyID, "was refused") {
		t.Errorf("with a wrong secret the console shows %q, want the key named as refused", text)
	}

	// The root key: the runtime is listed, the key is in sessionStorage
	// only, and an invocation is answered.
	signIn(secret)
	br.do(chromedp.WaitVisible(chromedp.CSS(row)))
	if text := br.text(row); !containsAll(text, "console_auth_agent", "READY") {
		t.Errorf("runtime row reads %q, want its name and READY", text)
	}
	stored := browserRun(br, chromedp.Evaluate[[]string](`[sessionStorage.getItem('berth.credentials') ?? '', JSON.stringify(localStorage)]`))
	if !strings.Contains(stored[0], keyID) || stored[1] != "{}" {
		t.Errorf("sessionStorage holds %q and localStorage %s; want the key in sessionStorage only", stored[0], stored[1])
	}
	if text := br.text("#identity"); !strings.Contains(text, keyID) {
		t.Errorf("sidebar reads %q, want the signing key", text)
	}
	const prompt = "signed hello"
	br.do(chromedp.Click(chromedp.CSS(row+` a[href^="#/inspector"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#inspect-send:not(:disabled)`)),
		fill("#inspect-prompt", prompt),
		chromedp.Click(chromedp.CSS("#inspect-send")))
	if out := br.waitTurn(); out.State != "done" || !strings.Contains(out.Output, `"echo": "`+prompt+`"`) {
		t.Errorf("signed invocation ended %q showing %q %s, want the echo of %q", out.State, out.Output, out.Error, prompt)
	}
	br.do(chromedp.Click(chromedp.CSS("#inspect-raw")),
		fill("#inspect-body", `{"op":"stream","n":3,"delay":0.1}`),
		chromedp.Click(chromedp.CSS("#inspect-send")))
	if out := br.waitTurn(); out.State != "done" || strings.Count(out.Output, `{"i":`) != 3 || !strings.Contains(out.Meta, "text/event-stream") {
		t.Errorf("signed streaming invocation ended %q showing %q (%s), want 3 frames of an event stream", out.State, out.Output, out.Meta)
	}
	br.shot(shots, "console-auth-inspector.png")

	// The session's logs: the history, then a line written while the
	// signed follow stream is open.
	sid := br.value("#inspect-session")
	br.do(chromedp.Click(chromedp.CSS(`.transcript > .turn:last-child a[href^="#/logs"]`)))
	br.waitLogLine("echo: " + prompt)
	b.mustInvoke(invokeInput{arn: arn, session: sid, body: map[string]any{"prompt": "followed live"}})
	br.waitLogLine("echo: followed live")

	// Sign out: the key is gone and calls are refused again.
	br.do(chromedp.Click(chromedp.CSS("#signout")), chromedp.WaitVisible(chromedp.CSS("#credentials-form")),
		chromedp.Click(chromedp.CSS(`#nav a[data-view="runtimes"]`)), chromedp.WaitVisible(chromedp.CSS(`main .error-hint`)))
	if left := browserRun(br, chromedp.Evaluate[int](`sessionStorage.length + localStorage.length`)); left != 0 {
		t.Errorf("%d items left in the browser's storage after signing out", left)
	}
	br.checkConsole()
}

// deploySigned uploads an agent with a signed request and creates a READY
// runtime for it with b's signing clients, returning its ID and ARN.
func deploySigned(t *testing.T, b *berth, keyID, secret, name string, a agent) (id, arn string) {
	t.Helper()
	ctx := context.Background()
	key := name + ".zip"
	req := must(http.NewRequest(http.MethodPut, "http://"+b.addr+"/berth/v1/code/agents/"+key, bytes.NewReader(a.bundle)))
	sum := sha256.Sum256(a.bundle)
	if err := v4.NewSigner().SignHTTP(ctx, aws.Credentials{AccessKeyID: keyID, SecretAccessKey: secret}, req,
		hex.EncodeToString(sum[:]), "bedrock-agentcore", "us-east-1", time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("signed upload: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("signed upload: %s", resp.Status)
	}
	out, err := b.control.CreateAgentRuntime(ctx, &cp.CreateAgentRuntimeInput{
		AgentRuntimeName: aws.String(name), RoleArn: aws.String("arn:aws:iam::123456789012:role/agent"),
		AgentRuntimeArtifact: &cptypes.AgentRuntimeArtifactMemberCodeConfiguration{Value: cptypes.CodeConfiguration{
			Code:    &cptypes.CodeMemberS3{Value: cptypes.S3Location{Bucket: aws.String("agents"), Prefix: aws.String(key)}},
			Runtime: a.runtime, EntryPoint: a.entryPoint}},
		NetworkConfiguration: &cptypes.NetworkConfiguration{NetworkMode: cptypes.NetworkModePublic},
	})
	if err != nil {
		t.Fatalf("CreateAgentRuntime %s: %v", name, err)
	}
	b.waitReady(*out.AgentRuntimeId, "")
	return *out.AgentRuntimeId, *out.AgentRuntimeArn
}
