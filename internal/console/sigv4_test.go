package console

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/chromedp/chromedp"
)

// TestSigV4 signs requests with the console's signer in Chromium and
// compares each signature with the AWS SDK's for the same request, key and
// time.
func TestSigV4(t *testing.T) {
	const (
		host   = "berth.example:8080"
		keyID  = "AKIDBERTHEXAMPLE"
		secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
	)
	when := time.Date(2026, 11, 25, 12, 3, 4, 567e6, time.UTC)
	tests := []struct {
		name, method, path, region string
		body                       string
		bytes                      bool // send body as a Uint8Array
	}{
		{"GET without query", "GET", "/berth/v1/sessions", "us-east-1", "", false},
		{"empty path", "GET", "", "us-east-1", "", false},
		{"POST with paging query", "POST", "/runtimes/?maxResults=100&nextToken=a%2Bb%3D%3D", "us-east-1", "", false},
		{"escaped ARN in path", "POST", "/runtimes/arn%3Aaws%3Abedrock-agentcore%3Aus-east-1%3A123456789012%3Aruntime%2Fagent-x/invocations?qualifier=DEFAULT",
			"eu-west-2", `{"prompt":"héllo ✓"}`, false},
		{"query needing encoding, sorted", "GET", "/berth/v1/logs?tail=10&follow=true&runtimeId=a+b&sessionId=x%21%27%28%29%2A~y&a=1&a=2", "us-east-1", "", false},
		{"bytes body", "PUT", "/berth/v1/code/agents/a.zip", "us-east-1", "PK\x03\x04binary", true},
		{"default region", "DELETE", "/berth/v1/sessions/rt/sess", "", "", false},
	}
	type jsCase struct {
		Method string `json:"method"`
		URL    string `json:"url"`
		Region string `json:"region"`
		Body   string `json:"body"`
		Bytes  bool   `json:"bytes"`
	}
	cases := make([]jsCase, len(tests))
	for i, tt := range tests {
		cases[i] = jsCase{tt.method, tt.path, tt.region, tt.body, tt.bytes}
	}
	input, err := json.Marshal(cases)
	if err != nil {
		t.Fatal(err)
	}

	srv := httptest.NewServer(Handler())
	defer srv.Close()
	ctx := newBrowser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/console/favicon.svg")); err != nil {
		t.Fatal(err)
	}
	js := fmt.Sprintf(`import('/console/sigv4.js').then(({ sign }) => Promise.all(%s.map((c) => sign(
		{ method: c.method, url: c.url || '/', body: c.bytes ? new TextEncoder().encode(c.body) : (c.body || undefined) },
		{ accessKeyId: %q, secretAccessKey: %q, region: c.region },
		{ date: new Date(%q), host: %q }))))`, input, keyID, secret, when.Format(time.RFC3339Nano), host)
	got, err := chromedp.Run(ctx, chromedp.Evaluate[[]map[string]string](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}

	signer := v4.NewSigner()
	for i, tt := range tests {
		req, err := http.NewRequest(tt.method, "http://"+host+tt.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		region := tt.region
		if region == "" {
			region = "us-east-1"
		}
		sum := sha256.Sum256([]byte(tt.body))
		err = signer.SignHTTP(context.Background(), aws.Credentials{AccessKeyID: keyID, SecretAccessKey: secret}, req,
			hex.EncodeToString(sum[:]), "bedrock-agentcore", region, when)
		if err != nil {
			t.Fatal(err)
		}
		if want := req.Header.Get("Authorization"); got[i]["Authorization"] != want {
			t.Errorf("%s: Authorization\n got %s\nwant %s", tt.name, got[i]["Authorization"], want)
		}
		if want := req.Header.Get("X-Amz-Date"); got[i]["X-Amz-Date"] != want {
			t.Errorf("%s: X-Amz-Date = %q, want %q", tt.name, got[i]["X-Amz-Date"], want)
		}
	}

	// What the signer cannot sign it refuses, saying why.
	refusals := []struct{ call, want string }{
		{`sign({ url: '/', body: new Blob(['x']) }, { accessKeyId: 'a', secretAccessKey: 'b' })`, "body of type Blob"},
		{`sign({ url: '/' }, { accessKeyId: 'a' })`, "secret access key"},
		{`sign({ url: '/' }, null)`, "access key ID"},
	}
	for _, r := range refusals {
		js := fmt.Sprintf(`import('/console/sigv4.js').then(({ sign }) => %s).then(() => 'signed', (e) => e.message)`, r.call)
		msg, err := chromedp.Run(ctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(msg, r.want) {
			t.Errorf("%s: %q, want an error about %q", r.call, msg, r.want)
		}
	}
}
