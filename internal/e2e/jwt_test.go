package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	dp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcore"
	cp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol"
	cptypes "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol/types"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// TestJWTAuthorizer runs Berth with --auth and a runtime with a
// customJWTAuthorizer whose issuer is a real OpenID Connect issuer on
// loopback: a valid bearer token invokes it, an invalid one is refused
// with 401 UnauthorizedException, and the agent sees the token only when
// Authorization is allowlisted.
func TestJWTAuthorizer(t *testing.T) {
	b := startBerth(t, "", "--auth")
	ctx := context.Background()
	m := keyLine.FindStringSubmatch(b.log())
	if m == nil {
		t.Fatalf("no root key printed:\n%s", b.log())
	}
	b.control, b.data = b.clients(m[1], m[2])

	// The issuer: a discovery document and a key set.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	idp := httptest.NewServer(mux)
	defer idp.Close()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"issuer": idp.URL, "jwks_uri": idp.URL + "/keys"})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "k1", Use: "sig"}}})
	})
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "k1"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	token := func(client string) string {
		now := time.Now()
		tok, err := jwt.Signed(signer).Claims(map[string]any{"iss": idp.URL, "sub": "alice", "client_id": client,
			"aud": "berth", "scope": "agent.invoke", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	bundle := goAgent(t).bundle
	req := must(http.NewRequest(http.MethodPut, "http://"+b.addr+"/berth/v1/code/agents/jwt.zip", bytes.NewReader(bundle)))
	sum := sha256.Sum256(bundle)
	if err := v4.NewSigner().SignHTTP(ctx, aws.Credentials{AccessKeyID: m[1], SecretAccessKey: m[2]}, req,
		hex.EncodeToString(sum[:]), "bedrock-agentcore", "us-east-1", time.Now()); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("signed upload: %v %v", resp, err)
	}
	authorizer := &cptypes.AuthorizerConfigurationMemberCustomJWTAuthorizer{Value: cptypes.CustomJWTAuthorizerConfiguration{
		DiscoveryUrl: aws.String(idp.URL + "/.well-known/openid-configuration"), AllowedAudience: []string{"berth"},
		AllowedClients: []string{"app"}, AllowedScopes: []string{"agent.invoke"},
	}}
	create := func(name string, authorizer cptypes.AuthorizerConfiguration, headers []string) (id, arn string) {
		in := &cp.CreateAgentRuntimeInput{
			AgentRuntimeName: aws.String(name), RoleArn: aws.String("arn:aws:iam::123456789012:role/agent"),
			AgentRuntimeArtifact: &cptypes.AgentRuntimeArtifactMemberCodeConfiguration{Value: cptypes.CodeConfiguration{
				Code:    &cptypes.CodeMemberS3{Value: cptypes.S3Location{Bucket: aws.String("agents"), Prefix: aws.String("jwt.zip")}},
				Runtime: cptypes.AgentManagedRuntimeTypePython311, EntryPoint: []string{"agent"}}},
			AuthorizerConfiguration: authorizer,
		}
		if headers != nil {
			in.RequestHeaderConfiguration = &cptypes.RequestHeaderConfigurationMemberRequestHeaderAllowlist{Value: headers}
		}
		out, err := b.control.CreateAgentRuntime(ctx, in)
		if err != nil {
			t.Fatalf("CreateAgentRuntime %s: %v", name, err)
		}
		return *out.AgentRuntimeId, *out.AgentRuntimeArn
	}
	listedID, listedARN := create("jwt_listed", authorizer, []string{"Authorization"})
	_, plainARN := create("jwt_plain", authorizer, nil)
	sigv4ID, sigv4ARN := create("sigv4_only", nil, nil)
	b.waitReady(sigv4ID, "")
	got := b.waitReady(listedID, "")
	if a, ok := got.AuthorizerConfiguration.(*cptypes.AuthorizerConfigurationMemberCustomJWTAuthorizer); !ok ||
		aws.ToString(a.Value.DiscoveryUrl) != idp.URL+"/.well-known/openid-configuration" || len(a.Value.AllowedClients) != 1 {
		t.Errorf("GetAgentRuntime authorizerConfiguration = %#v, want it as created", got.AuthorizerConfiguration)
	}

	// invoke calls a runtime with a bearer token, as AgentCore's OAuth
	// clients do (the SDKs only sign).
	invoke := func(arn, bearer string) (int, string, map[string]string) {
		t.Helper()
		u := "http://" + b.addr + "/runtimes/" + url.PathEscape(arn) + "/invocations"
		req := must(http.NewRequest(http.MethodPost, u, bytes.NewReader([]byte(`{"op":"headers"}`))))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+bearer)
		req.Header.Set("X-Amzn-Bedrock-AgentCore-Runtime-Session-Id", sessionID("jwt"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var res struct{ Headers map[string]string }
		if resp.StatusCode == 200 {
			if err := json.Unmarshal(body, &res); err != nil {
				t.Fatalf("agent answer %s: %v", body, err)
			}
		}
		return resp.StatusCode, resp.Header.Get("X-Amzn-ErrorType"), res.Headers
	}

	good := token("app")
	if code, _, h := invoke(listedARN, good); code != 200 || h["authorization"] != "Bearer "+good {
		t.Errorf("valid token, Authorization allowlisted: %d, agent got Authorization %q", code, h["authorization"])
	}
	if code, _, h := invoke(plainARN, good); code != 200 || h["authorization"] != "" {
		t.Errorf("valid token, Authorization not allowlisted: %d, agent got Authorization %q", code, h["authorization"])
	}
	for name, bearer := range map[string]string{"other client": token("intruder"), "garbage": "not.a.token", "tampered": good[:len(good)-4] + "AAAA"} {
		if code, typ, _ := invoke(listedARN, bearer); code != 401 || typ != "UnauthorizedException" {
			t.Errorf("%s token: %d %q, want 401 UnauthorizedException", name, code, typ)
		}
	}
	// A JWT runtime takes no SigV4 calls, even from the root key.
	_, err = b.data.InvokeAgentRuntime(ctx, &dp.InvokeAgentRuntimeInput{AgentRuntimeArn: aws.String(listedARN),
		RuntimeSessionId: aws.String(sessionID("jwt")), Payload: []byte(`{}`)})
	if apiErrorCode(err) != "UnauthorizedException" {
		t.Errorf("SigV4 call to a JWT runtime: %v, want UnauthorizedException", err)
	}
	// A runtime without a JWT authorizer takes no bearer tokens.
	if code, typ, _ := invoke(sigv4ARN, good); code != 401 || typ != "UnauthorizedException" {
		t.Errorf("bearer token for a SigV4 runtime: %d %q, want 401 UnauthorizedException", code, typ)
	}
	// Bearer tokens do not reach Berth's other calls.
	req = must(http.NewRequest(http.MethodGet, "http://"+b.addr+"/berth/v1/sessions", nil))
	req.Header.Set("Authorization", "Bearer "+good)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 403 {
		t.Errorf("bearer token on an admin call: %v %v, want 403", resp, err)
	} else {
		resp.Body.Close()
	}
}
