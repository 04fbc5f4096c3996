package control

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
)

func TestAuthorizerValidation(t *testing.T) {
	const disc = `"discoveryUrl":"https://idp.example/pool/.well-known/openid-configuration"`
	const jf = "authorizerConfiguration.customJWTAuthorizer"
	claim := func(typ, op, value string) string {
		return `"customClaims":[{"inboundTokenClaimName":"groups","inboundTokenClaimValueType":"` + typ +
			`","authorizingClaimMatchValue":{"claimMatchValue":` + value + `,"claimMatchOperator":"` + op + `"}}]`
	}
	cases := []struct {
		name  string
		raw   string
		field string // "" means valid
	}{
		{"minimal", `{"customJWTAuthorizer":{` + disc + `}}`, ""},
		{"full", `{"customJWTAuthorizer":{` + disc + `,"allowedAudience":["a"],"allowedClients":["c"],"allowedScopes":["read:x","berth.invoke"],` +
			claim("STRING_ARRAY", "CONTAINS_ANY", `{"matchValueStringList":["x","y"]}`) + `,"advertisedScopeMapping":{"a":"b"}}}`, ""},
		{"equals", `{"customJWTAuthorizer":{` + disc + `,` + claim("STRING", "EQUALS", `{"matchValueString":"x"}`) + `}}`, ""},
		{"contains", `{"customJWTAuthorizer":{` + disc + `,` + claim("STRING_ARRAY", "CONTAINS", `{"matchValueString":"x"}`) + `}}`, ""},
		{"not JSON object", `[1]`, "authorizerConfiguration"},
		{"unknown member", `{"customJWTAuthorizer":{` + disc + `,"allowedAudiences":["a"]}}`, "authorizerConfiguration"},
		{"no JWT", `{}`, jf},
		{"no discovery", `{"customJWTAuthorizer":{}}`, jf + ".discoveryUrl"},
		{"discovery suffix", `{"customJWTAuthorizer":{"discoveryUrl":"https://idp.example/jwks.json"}}`, jf + ".discoveryUrl"},
		{"discovery scheme", `{"customJWTAuthorizer":{"discoveryUrl":"file:///.well-known/openid-configuration"}}`, jf + ".discoveryUrl"},
		{"discovery credentials", `{"customJWTAuthorizer":{"discoveryUrl":"https://u:p@idp.example/.well-known/openid-configuration"}}`, jf + ".discoveryUrl"},
		{"empty audience", `{"customJWTAuthorizer":{` + disc + `,"allowedAudience":[]}}`, jf + ".allowedAudience"},
		{"empty client", `{"customJWTAuthorizer":{` + disc + `,"allowedClients":[""]}}`, jf + ".allowedClients[0]"},
		{"empty scopes", `{"customJWTAuthorizer":{` + disc + `,"allowedScopes":[]}}`, jf + ".allowedScopes"},
		{"scope with space", `{"customJWTAuthorizer":{` + disc + `,"allowedScopes":["a b"]}}`, jf + ".allowedScopes[0]"},
		{"scope with slash", `{"customJWTAuthorizer":{` + disc + `,"allowedScopes":["ok","a/b"]}}`, jf + ".allowedScopes[1]"},
		{"scope not ASCII", `{"customJWTAuthorizer":{` + disc + `,"allowedScopes":["é"]}}`, jf + ".allowedScopes[0]"},
		{"private endpoint", `{"customJWTAuthorizer":{` + disc + `,"privateEndpoint":{}}}`, jf + ".privateEndpoint"},
		{"claim type", `{"customJWTAuthorizer":{` + disc + `,` + claim("NUMBER", "EQUALS", `{"matchValueString":"x"}`) + `}}`,
			jf + ".customClaims[0].inboundTokenClaimValueType"},
		{"claim operator", `{"customJWTAuthorizer":{` + disc + `,` + claim("STRING", "LIKE", `{"matchValueString":"x"}`) + `}}`,
			jf + ".customClaims[0].authorizingClaimMatchValue.claimMatchOperator"},
		{"claim operator misfit", `{"customJWTAuthorizer":{` + disc + `,` + claim("STRING", "CONTAINS_ANY", `{"matchValueStringList":["x"]}`) + `}}`,
			jf + ".customClaims[0].authorizingClaimMatchValue.claimMatchOperator"},
		{"claim both values", `{"customJWTAuthorizer":{` + disc + `,` + claim("STRING", "EQUALS", `{"matchValueString":"x","matchValueStringList":["y"]}`) + `}}`,
			jf + ".customClaims[0].authorizingClaimMatchValue.claimMatchValue"},
		{"claim no match", `{"customJWTAuthorizer":{` + disc + `,"customClaims":[{"inboundTokenClaimName":"g","inboundTokenClaimValueType":"STRING"}]}}`,
			jf + ".customClaims[0].authorizingClaimMatchValue"},
		{"claim no name", `{"customJWTAuthorizer":{` + disc + `,"customClaims":[{"inboundTokenClaimValueType":"STRING","authorizingClaimMatchValue":{"claimMatchValue":{"matchValueString":"x"},"claimMatchOperator":"EQUALS"}}]}}`,
			jf + ".customClaims[0].inboundTokenClaimName"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := validConfig()
			cfg.Extra = map[string]json.RawMessage{"authorizerConfiguration": json.RawMessage(c.raw)}
			err := cfg.normalize(60)
			if c.field == "" {
				if err != nil {
					t.Fatalf("normalize: %v", err)
				}
				if cfg.JWT == nil || cfg.JWT.DiscoveryURL == "" {
					t.Fatalf("JWT = %+v, want the parsed authorizer", cfg.JWT)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("normalize = %v, want a ValidationError", err)
			}
			if !slices.ContainsFunc(ve.Fields, func(f FieldError) bool { return f.Field == c.field }) {
				t.Errorf("error %v does not name %s", err, c.field)
			}
			if cfg.JWT != nil {
				t.Errorf("JWT = %+v for an invalid authorizer", cfg.JWT)
			}
		})
	}
}

func TestAuthorizerParsed(t *testing.T) {
	cfg := validConfig()
	cfg.HeaderAllowlist = []string{"Authorization"}
	cfg.Extra = map[string]json.RawMessage{"authorizerConfiguration": json.RawMessage(`{"customJWTAuthorizer":{` +
		`"discoveryUrl":"http://127.0.0.1:1/.well-known/openid-configuration","allowedClients":["c1","c2"],` +
		`"customClaims":[{"inboundTokenClaimName":"tier","inboundTokenClaimValueType":"STRING",` +
		`"authorizingClaimMatchValue":{"claimMatchValue":{"matchValueString":"gold"},"claimMatchOperator":"EQUALS"}}]}}`)}
	if err := cfg.normalize(60); err != nil {
		t.Fatalf("normalize: %v (Authorization may be allowlisted with a JWT authorizer)", err)
	}
	want := ClaimRule{Name: "tier", ValueType: ClaimString, Operator: MatchEquals, Value: "gold"}
	if j := cfg.JWT; j == nil || !slices.Equal(j.AllowedClients, []string{"c1", "c2"}) || len(j.CustomClaims) != 1 ||
		j.CustomClaims[0].Name != want.Name || j.CustomClaims[0].Value != want.Value || j.CustomClaims[0].Operator != want.Operator {
		t.Fatalf("JWT = %+v", cfg.JWT)
	}

	// A stored version is parsed again when read.
	stored, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var back Config
	if err := json.Unmarshal(stored, &back); err != nil {
		t.Fatal(err)
	}
	if back.JWT != nil {
		t.Fatal("JWT was stored; Extra is meant to be its only source")
	}
	if err := back.decodeAuthorizer(); err != nil || back.JWT == nil || back.JWT.DiscoveryURL != cfg.JWT.DiscoveryURL {
		t.Fatalf("decodeAuthorizer = %v, JWT %+v", err, back.JWT)
	}
}
