package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// testIssuer is a real OpenID Connect issuer on loopback: a discovery
// document and a key set, served over HTTP, and the private keys to sign
// tokens with.
type testIssuer struct {
	srv *httptest.Server

	mu        sync.Mutex
	keys      map[string]crypto.Signer // by key ID
	published []string                 // key IDs in the key set
	jwksHits  int
}

func newTestIssuer(t testing.TB) *testIssuer {
	t.Helper()
	is := &testIssuer{keys: map[string]crypto.Signer{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"issuer": is.srv.URL, "jwks_uri": is.srv.URL + "/keys"})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) {
		is.mu.Lock()
		defer is.mu.Unlock()
		is.jwksHits++
		var set jose.JSONWebKeySet
		for _, kid := range is.published {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: is.keys[kid].Public(), KeyID: kid, Use: "sig"})
		}
		json.NewEncoder(w).Encode(set)
	})
	is.srv = httptest.NewServer(mux) // loopback only
	t.Cleanup(is.srv.Close)
	return is
}

func (is *testIssuer) discoveryURL() string { return is.srv.URL + "/.well-known/openid-configuration" }

// addKey makes a key; published keys appear in the key set.
func (is *testIssuer) addKey(t testing.TB, kid string, publish bool) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	is.keys[kid] = k
	if publish {
		is.published = append(is.published, kid)
	}
}

func (is *testIssuer) publish(kid string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.published = append(is.published, kid)
}

func (is *testIssuer) hits() int {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.jwksHits
}

// sign returns a token with claims, signed by key kid.
func (is *testIssuer) sign(t testing.TB, kid string, claims map[string]any) string {
	t.Helper()
	is.mu.Lock()
	key := is.keys[kid]
	is.mu.Unlock()
	alg := jose.ES256
	if _, ok := key.(*rsa.PrivateKey); ok {
		alg = jose.RS256
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

var epoch = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// goodClaims satisfy testPolicy.
func goodClaims(iss string) map[string]any {
	return map[string]any{
		"iss": iss, "sub": "user-1", "aud": []string{"berth-api"}, "client_id": "app-1",
		"exp": epoch.Add(time.Hour).Unix(), "iat": epoch.Unix(), "nbf": epoch.Unix(),
		"scope": "openid agent.invoke", "tier": "gold", "groups": []string{"eng", "ops"},
	}
}

func testPolicy(is *testIssuer) *JWTPolicy {
	return &JWTPolicy{
		DiscoveryURL: is.discoveryURL(), Audiences: []string{"other", "berth-api"}, Clients: []string{"app-1", "app-2"},
		Scopes: []string{"agent.invoke", "agent.admin"},
		Claims: []ClaimRule{
			{Name: "tier", ValueType: ClaimString, Operator: MatchEquals, Value: "gold"},
			{Name: "groups", ValueType: ClaimStringArray, Operator: MatchContains, Value: "eng"},
			{Name: "groups", ValueType: ClaimStringArray, Operator: MatchContainsAny, Values: []string{"x", "ops"}},
		},
	}
}

func TestJWTVerify(t *testing.T) {
	is := newTestIssuer(t)
	is.addKey(t, "k1", true)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	is.mu.Lock()
	is.keys["rsa"] = rsaKey
	is.published = append(is.published, "rsa")
	is.mu.Unlock()
	is.addKey(t, "unpublished", false)
	other := newTestIssuer(t)
	other.addKey(t, "k1", true) // same key ID, different key and issuer

	v := &JWTVerifier{Client: is.srv.Client(), Now: func() time.Time { return epoch }}
	edit := func(f func(map[string]any)) map[string]any {
		c := goodClaims(is.srv.URL)
		f(c)
		return c
	}
	cases := []struct {
		name   string
		token  func() string
		policy func(*JWTPolicy)
		ok     bool
	}{
		{"valid", func() string { return is.sign(t, "k1", goodClaims(is.srv.URL)) }, nil, true},
		{"valid RSA", func() string { return is.sign(t, "rsa", goodClaims(is.srv.URL)) }, nil, true},
		{"azp instead of client_id", func() string {
			return is.sign(t, "k1", edit(func(c map[string]any) { delete(c, "client_id"); c["azp"] = "app-2" }))
		}, nil, true},
		{"scp list", func() string {
			return is.sign(t, "k1", edit(func(c map[string]any) { delete(c, "scope"); c["scp"] = []string{"agent.admin"} }))
		}, nil, true},
		{"no rules", func() string {
			return is.sign(t, "k1", edit(func(c map[string]any) { delete(c, "aud"); delete(c, "scope"); delete(c, "client_id") }))
		}, func(p *JWTPolicy) { *p = JWTPolicy{DiscoveryURL: p.DiscoveryURL} }, true},
		{"within leeway", func() string {
			return is.sign(t, "k1", edit(func(c map[string]any) { c["exp"] = epoch.Add(-30 * time.Second).Unix() }))
		}, nil, true},
		{"wrong audience", func() string {
			return is.sign(t, "k1", edit(func(c map[string]any) { c["aud"] = "someone-else" }))
		}, nil, false},
		{"no audience", func() string { return is.sign(t, "k1", edit(func(c map[string]any) { delete(c, "aud") })) }, nil, false},
		{"wrong client", func() string {
			return is.sign(t, "k1", edit(func(c map[string]any) { c["client_id"] = "app-3" }))
		}, nil, false},
		{"no client", func() string { return is.sign(t, "k1", edit(func(c map[string]any) { delete(c, "client_id") })) }, nil, false},
		{"wrong scope", func() string {
			return is.sign(t, "k1", edit(func(c map[string]any) { c["scope"] = "openid agent.read" }))
		}, nil, false},
		{"scope prefix is not a scope", func() string {
			return is.sign(t, "k1", edit(func(c map[string]any) { c["scope"] = "agent.invoke2" }))
		}, nil, false},
		{"wrong claim", func() string { return is.sign(t, "k1", edit(func(c map[string]any) { c["tier"] = "silver" })) }, nil, false},
		{"claim of wrong type", func() string {
			return is.sign(t, "k1", edit(func(c map[string]any) { c["tier"] = []string{"gold"} }))
		}, nil, false},
		{"missing claim", func() string { return is.sign(t, "k1", edit(func(c map[string]any) { delete(c, "tier") })) }, nil, false},
		{"array claim without the value", func() string {
			return is.sign(t, "k1", edit(func(c map[string]any) { c["groups"] = []string{"ops"} }))
		}, nil, false},
		{"array claim with none of the values", func() string {
			return is.sign(t, "k1", edit(func(c map[string]any) { c["groups"] = []string{"eng"} }))
		}, nil, false},
		{"expired", func() string {
			return is.sign(t, "k1", edit(func(c map[string]any) { c["exp"] = epoch.Add(-5 * time.Minute).Unix() }))
		}, nil, false},
		{"no expiry", func() string { return is.sign(t, "k1", edit(func(c map[string]any) { delete(c, "exp") })) }, nil, false},
		{"not yet valid", func() string {
			return is.sign(t, "k1", edit(func(c map[string]any) { c["nbf"] = epoch.Add(5 * time.Minute).Unix() }))
		}, nil, false},
		{"unknown issuer", func() string {
			return is.sign(t, "k1", edit(func(c map[string]any) { c["iss"] = "https://evil.example" }))
		}, nil, false},
		{"other issuer's token", func() string { return other.sign(t, "k1", goodClaims(other.srv.URL)) }, nil, false},
		{"bad signature", func() string {
			tok := []byte(is.sign(t, "k1", goodClaims(is.srv.URL)))
			tok[len(tok)-5] ^= 1
			return string(tok)
		}, nil, false},
		{"unknown key ID", func() string { return is.sign(t, "unpublished", goodClaims(is.srv.URL)) }, nil, false},
		{"unsigned", func() string {
			return "eyJhbGciOiJub25lIn0." + base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"`+is.srv.URL+`"}`)) + "."
		}, nil, false},
		{"garbage", func() string { return "not-a-jwt" }, nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := testPolicy(is)
			if c.policy != nil {
				c.policy(p)
			}
			err := v.Verify(context.Background(), c.token(), p)
			if c.ok && err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if !c.ok {
				if err == nil {
					t.Fatal("Verify accepted the token")
				}
				if !errors.Is(err, ErrUnauthorized) {
					t.Fatalf("Verify = %v, want ErrUnauthorized", err)
				}
				t.Log(err)
			}
		})
	}
}

func TestJWTKeyRotation(t *testing.T) {
	is := newTestIssuer(t)
	is.addKey(t, "old", true)
	is.addKey(t, "new", false)
	now := epoch
	v := &JWTVerifier{Client: is.srv.Client(), Now: func() time.Time { return now }, RefetchInterval: 10 * time.Second}
	p := &JWTPolicy{DiscoveryURL: is.discoveryURL()}
	ctx := context.Background()

	if err := v.Verify(ctx, is.sign(t, "old", goodClaims(is.srv.URL)), p); err != nil {
		t.Fatalf("old key: %v", err)
	}
	if err := v.Verify(ctx, is.sign(t, "old", goodClaims(is.srv.URL)), p); err != nil || is.hits() != 1 {
		t.Fatalf("old key again: %v, %d key set fetches, want 1 (cached)", err, is.hits())
	}
	// A token by a key not yet published: fetched again (the last fetch
	// is older than the refetch interval), still refused; more such
	// tokens soon after do not fetch again.
	now = now.Add(11 * time.Second)
	for range 3 {
		if err := v.Verify(ctx, is.sign(t, "new", goodClaims(is.srv.URL)), p); err == nil {
			t.Fatal("unpublished key accepted")
		}
	}
	if is.hits() != 2 {
		t.Fatalf("%d key set fetches, want 2 (one refetch for the unknown key ID, then none)", is.hits())
	}
	// The issuer rotates: its new key is fetched on sight once the
	// refetch interval has passed.
	is.publish("new")
	now = now.Add(11 * time.Second)
	if err := v.Verify(ctx, is.sign(t, "new", goodClaims(is.srv.URL)), p); err != nil {
		t.Fatalf("new key after rotation: %v", err)
	}
	if is.hits() != 3 {
		t.Fatalf("%d key set fetches, want 3", is.hits())
	}
	// Keys are fetched again when old, so a withdrawn key stops working.
	is.mu.Lock()
	is.published = []string{"new"}
	is.mu.Unlock()
	now = now.Add(DefaultKeysMaxAge + time.Second)
	if err := v.Verify(ctx, is.sign(t, "old", goodClaims(is.srv.URL)), p); err == nil {
		t.Fatal("withdrawn key still accepted after the keys aged")
	}
}

func TestJWTIssuerUnreachable(t *testing.T) {
	is := newTestIssuer(t)
	is.addKey(t, "k1", true)
	tok := is.sign(t, "k1", goodClaims(is.srv.URL))
	url := is.discoveryURL()
	is.srv.Close()
	v := &JWTVerifier{Client: &http.Client{Timeout: 5 * time.Second}, Now: func() time.Time { return epoch }}
	err := v.Verify(context.Background(), tok, &JWTPolicy{DiscoveryURL: url})
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("Verify = %v, want ErrUnauthorized", err)
	}
}

func BenchmarkJWTVerify(b *testing.B) {
	is := newTestIssuer(b)
	is.addKey(b, "k1", true)
	v := &JWTVerifier{Client: is.srv.Client(), Now: func() time.Time { return epoch }}
	tok, p := is.sign(b, "k1", goodClaims(is.srv.URL)), testPolicy(is)
	for b.Loop() {
		if err := v.Verify(context.Background(), tok, p); err != nil {
			b.Fatal(err)
		}
	}
}
