package api

import (
	"context"
	"fmt"
	"net/http"
	"slices"

	"github.com/berthrun/berth/internal/auth"
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
