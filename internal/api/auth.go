package api

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/berthrun/berth/internal/auth"
	"github.com/berthrun/berth/internal/control"
)

type keyCtxKey struct{}

// accessDenied is the one answer to a request that fails authentication:
// it does not say what failed.
var accessDenied = &apiError{Status: http.StatusForbidden, Type: "AccessDeniedException",
	Message: "The request signature or its credentials are not valid. Sign requests with SigV4 (service bedrock-agentcore) using a key Berth issued."}

// dataPlaneCall reports whether segs name a data-plane call, which invoke
// keys may make.
func dataPlaneCall(segs []string) bool {
	return len(segs) == 3 && segs[0] == "runtimes" && (segs[2] == "invocations" || segs[2] == "stopruntimesession")
}

// authenticate verifies r's signature and that its key may make the call
// segs names. On failure it answers and returns false.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, segs []string) (*http.Request, bool) {
	if len(segs) == 3 && segs[0] == "berth" && segs[2] == "health" {
		return r, true
	}
	if _, ok := bearerToken(r); ok && dataPlaneCall(segs) {
		// Checked against the runtime's own JWT authorizer once the
		// runtime is known (authorizeBearer).
		return r, true
	}
	key, cleanup, err := s.opts.Verifier.Verify(r)
	if err != nil {
		s.log.Info("request refused", "request_id", requestID(r.Context()), "err", err)
		s.writeError(w, r, accessDenied)
		return r, false
	}
	context.AfterFunc(r.Context(), cleanup)
	if key.Role != auth.RoleAdmin && !dataPlaneCall(segs) {
		s.writeError(w, r, &apiError{Status: http.StatusForbidden, Type: "AccessDeniedException",
			Message: fmt.Sprintf("key %s may only invoke agent runtimes", key.ID)})
		return r, false
	}
	return r.WithContext(context.WithValue(r.Context(), keyCtxKey{}, key)), true
}

// authorizeRuntime checks that the call's key may act on runtimeID, and for
// the user it names, if any. Without authentication everything is allowed.
func (s *Server) authorizeRuntime(r *http.Request, runtimeID string) error {
	key, ok := r.Context().Value(keyCtxKey{}).(auth.Key)
	if !ok || key.Role == auth.RoleAdmin {
		return nil
	}
	if len(key.Runtimes) > 0 && !slices.Contains(key.Runtimes, runtimeID) {
		return &apiError{Status: http.StatusForbidden, Type: "AccessDeniedException",
			Message: fmt.Sprintf("key %s may not invoke agent runtime %s", key.ID, runtimeID)}
	}
	if r.Header.Get("X-Amzn-Bedrock-AgentCore-Runtime-User-Id") != "" && !key.ActForUsers {
		return &apiError{Status: http.StatusForbidden, Type: "AccessDeniedException",
			Message: fmt.Sprintf("key %s may not act for users (runtimeUserId)", key.ID)}
	}
	return nil
}

// unauthorized is the one answer to a data-plane call whose bearer token
// is missing, not valid, or sent to a runtime without a JWT authorizer.
var unauthorized = &apiError{Status: http.StatusUnauthorized, Type: "UnauthorizedException",
	Message: "The bearer token is missing or not valid for this agent runtime."}

// bearerToken returns the token of an "Authorization: Bearer" header.
func bearerToken(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// authorizeBearer applies a runtime's customJWTAuthorizer, jwt, to a
// data-plane call: a runtime with one takes only valid bearer tokens, a
// runtime without one takes none (its callers sign with SigV4, if the
// server requires authentication). Why a token was refused goes to the
// log, never to the caller.
func (s *Server) authorizeBearer(r *http.Request, runtimeID string, jwt *control.JWTAuthorizer) error {
	tok, bearer := bearerToken(r)
	var err error
	switch {
	case jwt == nil && !bearer:
		return nil
	case jwt == nil:
		err = fmt.Errorf("agent runtime %s has no JWT authorizer; sign with SigV4", runtimeID)
	case !bearer:
		err = fmt.Errorf("agent runtime %s takes only bearer tokens", runtimeID)
	default:
		err = s.jwt.Verify(r.Context(), tok, jwtPolicy(jwt))
	}
	if err != nil {
		s.log.Info("bearer token refused", "request_id", requestID(r.Context()), "runtime", runtimeID, "err", err)
		return unauthorized
	}
	return nil
}

// jwtPolicy is the auth package's view of a runtime's JWT authorizer.
func jwtPolicy(j *control.JWTAuthorizer) *auth.JWTPolicy {
	p := &auth.JWTPolicy{DiscoveryURL: j.DiscoveryURL, Audiences: j.AllowedAudience, Clients: j.AllowedClients, Scopes: j.AllowedScopes}
	for _, c := range j.CustomClaims {
		p.Claims = append(p.Claims, auth.ClaimRule{Name: c.Name, ValueType: c.ValueType, Operator: c.Operator, Value: c.Value, Values: c.Values})
	}
	return p
}
