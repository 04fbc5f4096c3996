package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/aws/smithy-go"
)

func TestExitCode(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{nil, ExitOK},
		{errors.New("boom"), ExitError},
		{usageError("bad"), ExitUsage},
		{fmt.Errorf("wrapped: %w", &Error{Code: ExitNotFound, Err: errors.New("x")}), ExitNotFound},
		{context.Canceled, ExitInterrupted},
		{errors.New(`unknown command "frob" for "berth"`), ExitUsage},
		{errors.New("unknown flag: --frob"), ExitUsage},
		{errors.New("flag needs an argument: --port"), ExitUsage},
	} {
		if got := ExitCode(c.err); got != c.want {
			t.Errorf("ExitCode(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

func TestServerError(t *testing.T) {
	s := Settings{Server: Setting{Value: "http://127.0.0.1:4780"}}
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	for _, c := range []struct {
		name     string
		err      error
		wantCode int
	}{
		{"refused", fmt.Errorf("operation error: %w", refused), ExitUnreachable},
		{"not found", &smithy.GenericAPIError{Code: "ResourceNotFoundException", Message: "no such runtime"}, ExitNotFound},
		{"berth API not found", &apiError{Status: 404, Code: "ResourceNotFoundException", Message: "no such object"}, ExitNotFound},
		{"validation", &smithy.GenericAPIError{Code: "ValidationException", Message: "bad name"}, ExitUsage},
		{"agent failed", &smithy.GenericAPIError{Code: "RuntimeClientError", Message: "exited"}, ExitAgentFailed},
		{"other", &smithy.GenericAPIError{Code: "InternalServerException", Message: "oops"}, ExitError},
		{"interrupted", context.Canceled, ExitInterrupted},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := serverError(s, "do it", c.err)
			if got := ExitCode(err); got != c.wantCode {
				t.Errorf("exit code of %v = %d, want %d", err, got, c.wantCode)
			}
		})
	}
	if err := serverError(s, "x", nil); err != nil {
		t.Errorf("serverError(nil) = %v", err)
	}
}
