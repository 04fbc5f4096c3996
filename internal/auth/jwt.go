package auth

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// ErrUnauthorized is the error of every refused bearer token. The wrapped
// detail is for the server log, never for the caller.
var ErrUnauthorized = errors.New("the bearer token is not valid for this agent runtime")

// Claim value types and match operators of a ClaimRule (AgentCore's names).
const (
	ClaimString      = "STRING"
	ClaimStringArray = "STRING_ARRAY"
	MatchEquals      = "EQUALS"
	MatchContains    = "CONTAINS"
	MatchContainsAny = "CONTAINS_ANY"
)

// JWTPolicy is what a runtime's customJWTAuthorizer demands of a token.
// Every rule that is set must hold.
type JWTPolicy struct {
	// DiscoveryURL is the issuer's OpenID Connect discovery document.
	DiscoveryURL string
	// Audiences, if set, must contain one of the token's aud values.
	Audiences []string
	// Clients, if set, must contain the token's client_id (or azp).
	Clients []string
	// Scopes, if set, must contain at least one of the token's scopes
	// (scope, space-separated, or scp).
	Scopes []string
	// Claims must all match.
	Claims []ClaimRule
}

// ClaimRule requires the claim Name, of ValueType, to match: EQUALS (a
// STRING claim equal to Value), CONTAINS (a STRING_ARRAY claim holding
// Value) or CONTAINS_ANY (a STRING_ARRAY claim holding one of Values).
type ClaimRule struct {
	Name      string
	ValueType string
	Operator  string
	Value     string
	Values    []string
}

// Defaults of a JWTVerifier.
const (
	// DefaultLeeway is the clock skew allowed on exp, nbf and iat.
	DefaultLeeway = time.Minute
	// DefaultKeysMaxAge is how long an issuer's keys are used before they
	// are fetched again, so that a withdrawn key stops working.
	DefaultKeysMaxAge = time.Hour
	// DefaultRefetchInterval bounds how often a token with an unknown key
	// ID (or an unreachable issuer) makes Berth fetch an issuer's keys, so
	// forged tokens cannot turn Berth against the issuer.
	DefaultRefetchInterval = 10 * time.Second
	// maxDocument bounds a discovery document or key set.
	maxDocument = 1 << 20
)

// signatureAlgorithms are the asymmetric algorithms a token may be signed
// with: never none, never an HMAC keyed with a public key.
var signatureAlgorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA,
}

// JWTVerifier verifies bearer tokens against OpenID Connect issuers, found
// through their discovery documents. Each issuer's keys are cached, and
// fetched again when they grow old or a token names a key ID the cache
// does not hold (the issuer rotated its keys). It is safe for concurrent
// use and starts no goroutines: fetches run in the calling request.
type JWTVerifier struct {
	// Client fetches discovery documents and key sets.
	Client *http.Client
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Leeway, KeysMaxAge and RefetchInterval default to the constants
	// above when zero.
	Leeway, KeysMaxAge, RefetchInterval time.Duration

	mu      sync.Mutex
	issuers map[string]*issuer // by discovery URL
}

// NewJWTVerifier returns a verifier that fetches with a client that gives
// up after 10 seconds.
func NewJWTVerifier() *JWTVerifier {
	return &JWTVerifier{Client: &http.Client{Timeout: 10 * time.Second}}
}

// issuer is the cached discovery document and key set of one discovery URL.
type issuer struct {
	url string
	// sem, holding one token, serializes fetches while letting a waiter
	// give up with its context.
	sem chan struct{}

	mu        sync.Mutex
	issuer    string // the discovery document's issuer
	keys      jose.JSONWebKeySet
	fetched   time.Time // last successful fetch
	attempted time.Time // last fetch, successful or not
	err       error     // of the last fetch
}

// tokenClaims are the registered claims plus those the policy reads.
type tokenClaims struct {
	jwt.Claims
	ClientID string          `json:"client_id"`
	AZP      string          `json:"azp"`
	Scope    string          `json:"scope"`
	SCP      json.RawMessage `json:"scp"`
}

// Verify checks token against p: its signature by one of the issuer's
// keys, its issuer, its times and p's rules. Every failure wraps
// ErrUnauthorized; the rest of the message says why, for the log.
func (v *JWTVerifier) Verify(ctx context.Context, token string, p *JWTPolicy) error {
	if err := v.verify(ctx, token, p); err != nil {
		return fmt.Errorf("%w: %w", ErrUnauthorized, err)
	}
	return nil
}

func (v *JWTVerifier) verify(ctx context.Context, token string, p *JWTPolicy) error {
	tok, err := jwt.ParseSigned(token, signatureAlgorithms)
	if err != nil {
		return fmt.Errorf("parse token: %w", err)
	}
	if len(tok.Headers) != 1 {
		return errors.New("token has more than one signature")
	}
	kid := tok.Headers[0].KeyID
	is := v.issuer(p.DiscoveryURL)
	iss, keys, err := is.lookup(ctx, v, kid)
	if err != nil {
		return err
	}
	var claims tokenClaims
	var all map[string]any
	var verr error
	for _, k := range keys {
		if verr = tok.Claims(k.Key, &claims, &all); verr == nil {
			break
		}
	}
	if verr != nil {
		return fmt.Errorf("verify signature (kid %q): %w", kid, verr)
	}
	if claims.Expiry == nil {
		return errors.New("token has no exp claim")
	}
	if err := claims.ValidateWithLeeway(jwt.Expected{Issuer: iss, Time: v.now()}, v.leeway()); err != nil {
		return fmt.Errorf("validate claims (iss %q, want %q): %w", claims.Issuer, iss, err)
	}
	if len(p.Audiences) > 0 && !slices.ContainsFunc(p.Audiences, claims.Audience.Contains) {
		return fmt.Errorf("audience %q is not allowed", []string(claims.Audience))
	}
	if len(p.Clients) > 0 {
		client := claims.ClientID
		if client == "" {
			client = claims.AZP
		}
		if !slices.Contains(p.Clients, client) {
			return fmt.Errorf("client %q is not allowed", client)
		}
	}
	if len(p.Scopes) > 0 {
		scopes, err := claims.scopes()
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(p.Scopes, func(s string) bool { return slices.Contains(scopes, s) }) {
			return fmt.Errorf("scopes %q hold none of the allowed %q", scopes, p.Scopes)
		}
	}
	for _, r := range p.Claims {
		if err := r.match(all[r.Name]); err != nil {
			return fmt.Errorf("claim %q: %w", r.Name, err)
		}
	}
	return nil
}

// scopes returns the token's scopes: scope is a space-separated string
// (RFC 8693), scp a list or a string (Okta, Entra ID).
func (c *tokenClaims) scopes() ([]string, error) {
	out := strings.Fields(c.Scope)
	if len(c.SCP) == 0 || string(c.SCP) == "null" {
		return out, nil
	}
	var list []string
	if err := json.Unmarshal(c.SCP, &list); err == nil {
		return append(out, list...), nil
	}
	var s string
	if err := json.Unmarshal(c.SCP, &s); err != nil {
		return nil, errors.New("scp claim is neither a string nor a list of strings")
	}
	return append(out, strings.Fields(s)...), nil
}

// match checks the value of r's claim in a token.
func (r ClaimRule) match(v any) error {
	if v == nil {
		return errors.New("missing")
	}
	switch r.ValueType {
	case ClaimString:
		s, ok := v.(string)
		if !ok {
			return errors.New("is not a string")
		}
		if r.Operator == MatchEquals && s == r.Value {
			return nil
		}
	case ClaimStringArray:
		list, ok := v.([]any)
		if !ok {
			return errors.New("is not a list")
		}
		has := func(want string) bool {
			return slices.ContainsFunc(list, func(e any) bool { s, ok := e.(string); return ok && s == want })
		}
		switch r.Operator {
		case MatchContains:
			if has(r.Value) {
				return nil
			}
		case MatchContainsAny:
			if slices.ContainsFunc(r.Values, has) {
				return nil
			}
		}
	default:
		return fmt.Errorf("unknown value type %q", r.ValueType)
	}
	return fmt.Errorf("does not match (%s)", r.Operator)
}

func (v *JWTVerifier) issuer(url string) *issuer {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.issuers == nil {
		v.issuers = map[string]*issuer{}
	}
	is := v.issuers[url]
	if is == nil {
		is = &issuer{url: url, sem: make(chan struct{}, 1)}
		v.issuers[url] = is
	}
	return is
}

// lookup returns the issuer's name and the keys that may have signed a
// token with key ID kid (all of them if kid is empty), fetching the
// discovery document and key set first if they are missing, old, or lack
// kid.
func (is *issuer) lookup(ctx context.Context, v *JWTVerifier, kid string) (string, []jose.JSONWebKey, error) {
	for attempt := 0; ; attempt++ {
		is.mu.Lock()
		now := v.now()
		iss, keys := is.issuer, is.find(kid)
		fresh := !is.fetched.IsZero() && now.Sub(is.fetched) < v.keysMaxAge()
		recent := !is.attempted.IsZero() && now.Sub(is.attempted) < v.refetchInterval()
		lastErr, attempted := is.err, is.attempted
		is.mu.Unlock()

		switch {
		case len(keys) > 0 && (fresh || recent):
			return iss, keys, nil
		case recent || attempt > 0:
			// Fetched just now (by this call or another), still nothing
			// usable.
			if len(keys) > 0 {
				return iss, keys, nil // stale keys beat none while the issuer is unreachable
			}
			if lastErr != nil {
				return "", nil, lastErr
			}
			return "", nil, fmt.Errorf("issuer %s has no key %q", is.url, kid)
		}

		select {
		case is.sem <- struct{}{}:
		case <-ctx.Done():
			return "", nil, ctx.Err()
		}
		is.mu.Lock()
		again := is.attempted.Equal(attempted) // nobody fetched while we waited
		is.mu.Unlock()
		if again {
			is.fetch(ctx, v)
		}
		<-is.sem
		if err := ctx.Err(); err != nil {
			return "", nil, err
		}
	}
}

// find returns the signing keys with ID kid, or all signing keys if kid is
// empty. is.mu is held.
func (is *issuer) find(kid string) []jose.JSONWebKey {
	var out []jose.JSONWebKey
	for _, k := range is.keys.Keys {
		if (kid == "" || k.KeyID == kid) && k.Use != "enc" && k.IsPublic() {
			out = append(out, k)
		}
	}
	return out
}

// fetch reads the discovery document and the key set it names, and
// records the outcome.
func (is *issuer) fetch(ctx context.Context, v *JWTVerifier) {
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	var keys jose.JSONWebKeySet
	err := getJSON(ctx, v.Client, is.url, &doc)
	if err == nil && (doc.Issuer == "" || doc.JWKSURI == "") {
		err = fmt.Errorf("discovery document %s lacks issuer or jwks_uri", is.url)
	}
	if err == nil {
		err = getJSON(ctx, v.Client, doc.JWKSURI, &keys)
	}
	if err != nil && ctx.Err() != nil {
		// The caller gave up; that says nothing about the issuer, and
		// the next caller fetches again.
		return
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	is.attempted, is.err = v.now(), err
	if err == nil {
		is.issuer, is.keys, is.fetched = doc.Issuer, keys, is.attempted
	}
}

// getJSON decodes the JSON document at url into out.
func getJSON(ctx context.Context, c *http.Client, url string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", url, err)
	}
	req.Header.Set("Accept", "application/json")
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxDocument)).Decode(out); err != nil {
		return fmt.Errorf("decode %s: %w", url, err)
	}
	return nil
}

func (v *JWTVerifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

func (v *JWTVerifier) leeway() time.Duration     { return cmp.Or(v.Leeway, DefaultLeeway) }
func (v *JWTVerifier) keysMaxAge() time.Duration { return cmp.Or(v.KeysMaxAge, DefaultKeysMaxAge) }
func (v *JWTVerifier) refetchInterval() time.Duration {
	return cmp.Or(v.RefetchInterval, DefaultRefetchInterval)
}
