package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/berthrun/berth/internal/control"
	"github.com/berthrun/berth/internal/session"
)

// apiError is an error in AgentCore's wire shape: an HTTP status, an error
// type sent in X-Amzn-ErrorType, and a JSON body with a message.
type apiError struct {
	Status int    `json:"-"`
	Type   string `json:"-"`
	// Message is what the caller reads.
	Message string `json:"message"`
	// Reason and FieldList are ValidationException members.
	Reason    string       `json:"reason,omitempty"`
	FieldList []fieldError `json:"fieldList,omitempty"`
}

type fieldError struct {
	Name    string `json:"name"`
	Message string `json:"message"`
}

func (e *apiError) Error() string { return e.Type + ": " + e.Message }

func validationError(field, format string, args ...any) *apiError {
	msg := fmt.Sprintf(format, args...)
	return &apiError{Status: http.StatusBadRequest, Type: "ValidationException", Reason: "FieldValidationFailed",
		Message: field + ": " + msg, FieldList: []fieldError{{Name: field, Message: msg}}}
}

func parseError(format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Type: "ValidationException", Reason: "CannotParse",
		Message: fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) *apiError {
	return &apiError{Status: http.StatusNotFound, Type: "ResourceNotFoundException", Message: fmt.Sprintf(format, args...)}
}

func runtimeClientError(format string, args ...any) *apiError {
	return &apiError{Status: http.StatusFailedDependency, Type: "RuntimeClientError", Message: fmt.Sprintf(format, args...)}
}

// toAPIError maps an error from the layers below to its wire shape.
func toAPIError(err error) *apiError {
	var ae *apiError
	var ve *control.ValidationError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &ve):
		out := &apiError{Status: http.StatusBadRequest, Type: "ValidationException", Reason: "FieldValidationFailed", Message: ve.Error()}
		for _, f := range ve.Fields {
			out.FieldList = append(out.FieldList, fieldError{Name: f.Field, Message: f.Message})
		}
		return out
	case errors.Is(err, control.ErrNotFound), errors.Is(err, session.ErrNotFound):
		return &apiError{Status: http.StatusNotFound, Type: "ResourceNotFoundException", Message: err.Error()}
	case errors.Is(err, control.ErrConflict):
		return &apiError{Status: http.StatusConflict, Type: "ConflictException", Message: err.Error()}
	case errors.Is(err, control.ErrNotReady):
		return &apiError{Status: http.StatusConflict, Type: "RetryableConflictException", Message: err.Error()}
	case errors.Is(err, control.ErrQuota), errors.Is(err, session.ErrQuota):
		return &apiError{Status: http.StatusPaymentRequired, Type: "ServiceQuotaExceededException", Message: err.Error()}
	case errors.Is(err, session.ErrAgent):
		return runtimeClientError("%s", err.Error())
	case errors.Is(err, session.ErrClosed):
		return &apiError{Status: http.StatusServiceUnavailable, Type: "ServiceUnavailableException", Message: "the server is shutting down"}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &apiError{Status: http.StatusRequestTimeout, Type: "RequestTimeoutException", Message: err.Error()}
	}
	return &apiError{Status: http.StatusInternalServerError, Type: "InternalServerException",
		Message: "internal error; the server log has details under this request's ID"}
}

// writeError sends err in AgentCore's error shape.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	ae := toAPIError(err)
	log := s.log.With("request_id", requestID(r.Context()), "method", r.Method, "path", r.URL.EscapedPath(), "status", ae.Status, "type", ae.Type)
	if ae.Status >= 500 {
		log.Error("request failed", "err", err)
	} else {
		log.Debug("request refused", "err", err)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Amzn-ErrorType", ae.Type)
	w.WriteHeader(ae.Status)
	_ = json.NewEncoder(w).Encode(ae)
}
