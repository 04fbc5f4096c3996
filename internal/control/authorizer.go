package control

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
)

// DiscoverySuffix ends every customJWTAuthorizer discoveryUrl.
const DiscoverySuffix = "/.well-known/openid-configuration"

// Claim value types and match operators of a custom claim rule.
const (
	ClaimString      = "STRING"
	ClaimStringArray = "STRING_ARRAY"

	MatchEquals      = "EQUALS"
	MatchContains    = "CONTAINS"
	MatchContainsAny = "CONTAINS_ANY"
)

// JWTAuthorizer is a runtime's customJWTAuthorizer: data-plane calls carry
// a bearer token from the OpenID Connect issuer DiscoveryURL describes,
// which must satisfy every rule that is set.
type JWTAuthorizer struct {
	DiscoveryURL string
	// AllowedAudience, if set, must contain one of the token's aud values.
	AllowedAudience []string
	// AllowedClients, if set, must contain the token's client_id (or azp).
	AllowedClients []string
	// AllowedScopes, if set, must contain one of the token's scopes.
	AllowedScopes []string
	// CustomClaims must all match.
	CustomClaims []ClaimRule
}

// ClaimRule is one customClaims entry: the claim Name, of ValueType, must
// match Value (EQUALS, CONTAINS) or Values (CONTAINS_ANY) by Operator.
type ClaimRule struct {
	Name      string
	ValueType string // STRING or STRING_ARRAY
	Operator  string // EQUALS, CONTAINS or CONTAINS_ANY
	Value     string
	Values    []string
}

// Wire shapes of authorizerConfiguration (AgentCore's member names). The
// members Berth stores but does not enforce are kept as raw JSON only so
// that an unknown member (a typo that would silently loosen a rule) is
// refused.
type authorizerWire struct {
	CustomJWTAuthorizer *jwtWire `json:"customJWTAuthorizer"`
}

type jwtWire struct {
	DiscoveryURL           *string         `json:"discoveryUrl"`
	AllowedAudience        []string        `json:"allowedAudience"`
	AllowedClients         []string        `json:"allowedClients"`
	AllowedScopes          []string        `json:"allowedScopes"`
	CustomClaims           []claimWire     `json:"customClaims"`
	AdvertisedScopeMapping json.RawMessage `json:"advertisedScopeMapping"`
	// Not supported: Berth cannot honour them, and ignoring them would
	// accept calls AgentCore refuses.
	PrivateEndpoint              json.RawMessage `json:"privateEndpoint"`
	PrivateEndpointOverrides     json.RawMessage `json:"privateEndpointOverrides"`
	AllowedWorkloadConfiguration json.RawMessage `json:"allowedWorkloadConfiguration"`
}

type claimWire struct {
	InboundTokenClaimName      string `json:"inboundTokenClaimName"`
	InboundTokenClaimValueType string `json:"inboundTokenClaimValueType"`
	AuthorizingClaimMatchValue *struct {
		ClaimMatchValue *struct {
			MatchValueString     *string  `json:"matchValueString"`
			MatchValueStringList []string `json:"matchValueStringList"`
		} `json:"claimMatchValue"`
		ClaimMatchOperator string `json:"claimMatchOperator"`
	} `json:"authorizingClaimMatchValue"`
}

// parseAuthorizer validates an authorizerConfiguration member and returns
// its customJWTAuthorizer, adding what is wrong to v.
func parseAuthorizer(v *validator, raw json.RawMessage) *JWTAuthorizer {
	const f = "authorizerConfiguration"
	var w authorizerWire
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		v.add(f, "is not a valid authorizer configuration: %v", err)
		return nil
	}
	jw := w.CustomJWTAuthorizer
	if jw == nil {
		v.add(f+".customJWTAuthorizer", "is required")
		return nil
	}
	const jf = f + ".customJWTAuthorizer"
	n := len(v.errs)
	out := &JWTAuthorizer{AllowedAudience: jw.AllowedAudience, AllowedClients: jw.AllowedClients, AllowedScopes: jw.AllowedScopes}

	if jw.DiscoveryURL == nil || *jw.DiscoveryURL == "" {
		v.add(jf+".discoveryUrl", "is required")
	} else {
		out.DiscoveryURL = *jw.DiscoveryURL
		u, err := url.Parse(out.DiscoveryURL)
		switch {
		case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "":
			v.add(jf+".discoveryUrl", "%q is not an http(s) URL without credentials, query or fragment", out.DiscoveryURL)
		case !strings.HasSuffix(u.Path, DiscoverySuffix):
			v.add(jf+".discoveryUrl", "%q must end in %s", out.DiscoveryURL, DiscoverySuffix)
		}
	}
	for _, m := range []struct {
		name string
		list []string
	}{{"allowedAudience", jw.AllowedAudience}, {"allowedClients", jw.AllowedClients}} {
		name, list := m.name, m.list
		if list != nil && len(list) == 0 {
			v.add(jf+"."+name, "must not be empty when given; omit it to allow any")
		}
		for i, s := range list {
			if s == "" {
				v.add(fmt.Sprintf("%s.%s[%d]", jf, name, i), "must not be empty")
			}
		}
	}
	if jw.AllowedScopes != nil && len(jw.AllowedScopes) == 0 {
		v.add(jf+".allowedScopes", "must not be empty when given; omit it to allow any")
	}
	for i, s := range jw.AllowedScopes {
		if !validScope(s) {
			v.add(fmt.Sprintf("%s.allowedScopes[%d]", jf, i), "%q must be 1-255 printable ASCII characters other than space, \", / and \\", s)
		}
	}
	for _, m := range []struct {
		name string
		raw  json.RawMessage
	}{{"privateEndpoint", jw.PrivateEndpoint}, {"privateEndpointOverrides", jw.PrivateEndpointOverrides},
		{"allowedWorkloadConfiguration", jw.AllowedWorkloadConfiguration}} {
		if len(m.raw) > 0 && string(m.raw) != "null" {
			v.add(jf+"."+m.name, "is not supported by Berth")
		}
	}
	for i, c := range jw.CustomClaims {
		if r, ok := parseClaim(v, fmt.Sprintf("%s.customClaims[%d]", jf, i), c); ok {
			out.CustomClaims = append(out.CustomClaims, r)
		}
	}
	if len(v.errs) > n {
		return nil
	}
	return out
}

// parseClaim validates one customClaims entry. The operator must suit the
// claim's type: EQUALS compares a STRING claim with matchValueString,
// CONTAINS looks for matchValueString in a STRING_ARRAY claim, and
// CONTAINS_ANY for any of matchValueStringList in one.
func parseClaim(v *validator, f string, c claimWire) (ClaimRule, bool) {
	n := len(v.errs)
	r := ClaimRule{Name: c.InboundTokenClaimName, ValueType: c.InboundTokenClaimValueType}
	if r.Name == "" || len(r.Name) > 255 {
		v.add(f+".inboundTokenClaimName", "is required and at most 255 characters")
	}
	if r.ValueType != ClaimString && r.ValueType != ClaimStringArray {
		v.add(f+".inboundTokenClaimValueType", "%q is not STRING or STRING_ARRAY", r.ValueType)
	}
	m := c.AuthorizingClaimMatchValue
	if m == nil {
		v.add(f+".authorizingClaimMatchValue", "is required")
		return r, false
	}
	mf := f + ".authorizingClaimMatchValue"
	r.Operator = m.ClaimMatchOperator
	if m.ClaimMatchValue == nil {
		v.add(mf+".claimMatchValue", "is required")
	} else {
		mv := m.ClaimMatchValue
		switch {
		case (mv.MatchValueString == nil) == (mv.MatchValueStringList == nil):
			v.add(mf+".claimMatchValue", "must hold exactly one of matchValueString and matchValueStringList")
		case mv.MatchValueString != nil:
			r.Value = *mv.MatchValueString
			if r.Value == "" {
				v.add(mf+".claimMatchValue.matchValueString", "must not be empty")
			}
		default:
			r.Values = mv.MatchValueStringList
			if len(r.Values) == 0 {
				v.add(mf+".claimMatchValue.matchValueStringList", "must not be empty")
			}
		}
	}
	want := map[string]struct{ typ, value string }{
		MatchEquals:      {ClaimString, "matchValueString"},
		MatchContains:    {ClaimStringArray, "matchValueString"},
		MatchContainsAny: {ClaimStringArray, "matchValueStringList"},
	}
	if w, ok := want[r.Operator]; !ok {
		v.add(mf+".claimMatchOperator", "%q is not EQUALS, CONTAINS or CONTAINS_ANY", r.Operator)
	} else if len(v.errs) == n {
		hasList := r.Values != nil
		if r.ValueType != w.typ || hasList != (w.value == "matchValueStringList") {
			v.add(mf+".claimMatchOperator", "%s needs a %s claim and %s", r.Operator, w.typ, w.value)
		}
	}
	return r, len(v.errs) == n
}

// validScope reports whether s is an allowedScopes entry AgentCore accepts.
func validScope(s string) bool {
	if len(s) < 1 || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' || c == '"' || c == '/' || c == '\\' {
			return false
		}
	}
	return true
}
