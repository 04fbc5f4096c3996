package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

var signTime = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// signed returns a request signed by the AWS SDK's own signer, as an SDK
// client would send it, and then edited by edit (to tamper with it).
func signed(t *testing.T, key Key, method, target string, body []byte, service string, edit func(*http.Request)) *http.Request {
	t.Helper()
	out, _ := http.NewRequest(method, "http://127.0.0.1:4780"+target, bytes.NewReader(body))
	out.Header.Set("Content-Type", "application/json")
	out.Header.Set("X-Amzn-Bedrock-AgentCore-Runtime-Session-Id", strings.Repeat("s", 36))
	sum := sha256.Sum256(body)
	err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: key.ID, SecretAccessKey: key.Secret},
		out, hex.EncodeToString(sum[:]), service, "us-east-1", signTime)
	if err != nil {
		t.Fatal(err)
	}
	// What the server sees.
	in := httptest.NewRequest(method, target, bytes.NewReader(body))
	in.Host = out.URL.Host
	in.Header = out.Header.Clone()
	if edit != nil {
		edit(in)
	}
	return in
}

func TestVerify(t *testing.T) {
	keys, err := OpenKeys(filepath.Join(t.TempDir(), "keys.json"))
	if err != nil {
		t.Fatal(err)
	}
	good, _ := keys.Create(RoleAdmin, nil, false)
	revoked, _ := keys.Create(RoleInvoke, nil, false)
	if err := keys.Revoke(revoked.ID); err != nil {
		t.Fatal(err)
	}
	unknown := Key{ID: "BKUNKNOWNUNKNOWN0000", Secret: good.Secret}
	v := &Verifier{Keys: keys, Now: func() time.Time { return signTime.Add(time.Minute) }, TempDir: t.TempDir()}

	arnPath := "/runtimes/arn%3Aaws%3Abedrock-agentcore%3Aus-east-1%3A000000000000%3Aruntime%2Fa-abcdefghij/invocations?qualifier=DEFAULT&accountId=1"
	big := bytes.Repeat([]byte("x"), 3<<20)
	cases := []struct {
		name    string
		key     Key
		method  string
		target  string
		body    []byte
		service string
		edit    func(*http.Request)
		ok      bool
	}{
		{"list", good, http.MethodPost, "/runtimes/?maxResults=2&nextToken=a%20b", nil, Service, nil, true},
		{"invoke an ARN path", good, http.MethodPost, arnPath, []byte(`{"prompt":"hi"}`), Service, nil, true},
		{"large body, spooled", good, http.MethodPost, arnPath, big, Service, nil, true},
		{"tampered body", good, http.MethodPost, arnPath, []byte(`{"prompt":"hi"}`), Service, func(r *http.Request) {
			r.Body = io.NopCloser(strings.NewReader(`{"prompt":"ho"}`))
		}, false},
		{"tampered path", good, http.MethodPost, arnPath, nil, Service, func(r *http.Request) {
			r.URL.RawPath = strings.Replace(r.URL.RawPath, "a-abcdefghij", "b-abcdefghij", 1)
			r.URL.Path = strings.Replace(r.URL.Path, "a-abcdefghij", "b-abcdefghij", 1)
		}, false},
		{"tampered query", good, http.MethodPost, arnPath, nil, Service, func(r *http.Request) { r.URL.RawQuery = "qualifier=prod" }, false},
		{"tampered signed header", good, http.MethodPost, arnPath, nil, Service, func(r *http.Request) {
			r.Header.Set("X-Amzn-Bedrock-AgentCore-Runtime-Session-Id", strings.Repeat("t", 36))
		}, false},
		{"tampered date", good, http.MethodPost, arnPath, nil, Service, func(r *http.Request) {
			r.Header.Set("X-Amz-Date", signTime.Add(time.Second).Format(amzDate))
		}, false},
		{"unsigned header added", good, http.MethodPost, arnPath, nil, Service, func(r *http.Request) { r.Header.Set("X-Extra", "1") }, true},
		{"other service", good, http.MethodPost, arnPath, nil, "s3", nil, false},
		{"unknown key", unknown, http.MethodPost, arnPath, nil, Service, nil, false},
		{"revoked key", revoked, http.MethodPost, arnPath, nil, Service, nil, false},
		{"no signature", good, http.MethodPost, arnPath, nil, Service, func(r *http.Request) { r.Header.Del("Authorization") }, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := signed(t, c.key, c.method, c.target, c.body, c.service, c.edit)
			key, cleanup, err := v.Verify(r)
			defer cleanup()
			if c.ok != (err == nil) {
				t.Fatalf("Verify = %v, want ok %v", err, c.ok)
			}
			if err != nil {
				if !errors.Is(err, ErrUnauthenticated) {
					t.Errorf("error %v is not ErrUnauthenticated", err)
				}
				return
			}
			if key.ID != c.key.ID {
				t.Errorf("key = %s", key.ID)
			}
			// The handler still gets the whole body.
			if got, _ := io.ReadAll(r.Body); !bytes.Equal(got, c.body) {
				t.Errorf("body after Verify: %d bytes, want %d", len(got), len(c.body))
			}
		})
	}

	// Outside the clock-skew window.
	late := &Verifier{Keys: keys, Now: func() time.Time { return signTime.Add(MaxSkew + time.Second) }}
	if _, _, err := late.Verify(signed(t, good, http.MethodPost, "/runtimes/", nil, Service, nil)); err == nil {
		t.Error("a request signed too long ago was accepted")
	}
}

func TestKeysFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	a, err := OpenKeys(path)
	if err != nil {
		t.Fatal(err)
	}
	k, err := a.Create(RoleInvoke, []string{"rt-abcdefghij"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(k.ID) != 20 || len(k.Secret) != 40 {
		t.Errorf("key %q secret of %d characters", k.ID, len(k.Secret))
	}
	// Another process (berth keys) revokes it; the server sees it.
	b, err := OpenKeys(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Revoke(k.ID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // a distinct modification time
	if _, err := a.Lookup(k.ID); !errors.Is(err, ErrNoKey) {
		t.Errorf("lookup of a key revoked elsewhere = %v", err)
	}
	if _, err := a.Create("root", nil, false); err == nil {
		t.Error("an unknown role was accepted")
	}
}

// FuzzParseAuthorization: any header parses or is refused, without panics,
// and whatever parses names a key, a scope and the host header.
func FuzzParseAuthorization(f *testing.F) {
	f.Add("AWS4-HMAC-SHA256 Credential=BKAAAAAAAAAAAAAAAAAA/20261125/us-east-1/bedrock-agentcore/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=abcdef")
	f.Add("AWS4-HMAC-SHA256 Credential=/x/y/z/aws4_request, SignedHeaders=, Signature=")
	f.Add("AWS4-HMAC-SHA256 Credential=a/b/c/d/e/f, SignedHeaders=host, Signature=1")
	f.Add("Bearer eyJhbGciOiJIUzI1NiJ9")
	f.Add("AWS4-HMAC-SHA256 ,,,===")
	f.Fuzz(func(t *testing.T, h string) {
		c, err := parseAuthorization(h)
		if err != nil {
			return
		}
		if c.keyID == "" || c.signature == "" || !slices.Contains(c.signedHeaders, "host") {
			t.Errorf("parsed %q into an incomplete %+v", h, c)
		}
	})
}

func TestVerifyPresigned(t *testing.T) {
	keys, err := OpenKeys(filepath.Join(t.TempDir(), "keys.json"))
	if err != nil {
		t.Fatal(err)
	}
	key, _ := keys.Create(RoleAdmin, nil, false)
	presign := func(expires string, edit func(*http.Request)) *http.Request {
		out, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:4780/runtimes/arn%3Aaws%3Abedrock-agentcore%3Aus-east-1%3A000000000000%3Aruntime%2Fa-abcdefghij/ws?qualifier=DEFAULT&X-Amz-Expires="+expires, nil)
		signedURL, hdr, err := v4.NewSigner().PresignHTTP(context.Background(), aws.Credentials{AccessKeyID: key.ID, SecretAccessKey: key.Secret},
			out, "UNSIGNED-PAYLOAD", Service, "us-east-1", signTime)
		if err != nil {
			t.Fatal(err)
		}
		u := strings.TrimPrefix(signedURL, "http://127.0.0.1:4780")
		in := httptest.NewRequest(http.MethodGet, u, nil)
		in.Host = "127.0.0.1:4780"
		for k, v := range hdr {
			if !strings.EqualFold(k, "host") {
				in.Header[k] = v
			}
		}
		if edit != nil {
			edit(in)
		}
		return in
	}
	at := func(d time.Duration) *Verifier {
		return &Verifier{Keys: keys, Now: func() time.Time { return signTime.Add(d) }}
	}
	cases := []struct {
		name    string
		v       *Verifier
		expires string
		edit    func(*http.Request)
		ok      bool
	}{
		{"valid", at(time.Minute), "300", nil, true},
		{"expired", at(301 * time.Second), "300", nil, false},
		{"too long an expiry", at(time.Minute), "86400", nil, false},
		{"tampered query", at(time.Minute), "300", func(r *http.Request) {
			r.URL.RawQuery = strings.Replace(r.URL.RawQuery, "qualifier=DEFAULT", "qualifier=prod", 1)
		}, false},
		{"not a GET", at(time.Minute), "300", func(r *http.Request) { r.Method = http.MethodPost }, false},
	}
	for _, c := range cases {
		_, _, err := c.v.Verify(presign(c.expires, c.edit))
		if (err == nil) != c.ok {
			t.Errorf("%s: Verify = %v, want ok %v", c.name, err, c.ok)
		}
	}
}
