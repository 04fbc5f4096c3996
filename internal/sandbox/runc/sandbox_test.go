package runc

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestSentryStatus checks how the exit of runsc's Sentry turns into its
// agent's: 128+n is the agent killed by signal n, a signal to the Sentry
// itself stays as it is.
func TestSentryStatus(t *testing.T) {
	exited := func(code int) unix.WaitStatus { return unix.WaitStatus(code << 8) }
	killed := func(sig unix.Signal) unix.WaitStatus { return unix.WaitStatus(sig) }
	tests := []struct {
		name string
		in   unix.WaitStatus
		want string
	}{
		{"success", exited(0), "agent exited with status 0"},
		{"failure", exited(7), "agent exited with status 7"},
		{"agent killed", exited(128 + 9), "agent killed by signal SIGKILL"},
		{"agent terminated", exited(128 + 15), "agent killed by signal SIGTERM"},
		{"128 is a status", exited(128), "agent exited with status 128"},
		{"past the signals", exited(200), "agent exited with status 200"},
		{"Sentry killed", killed(unix.SIGKILL), "agent killed by signal SIGKILL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := exitReason(sentryStatus(tt.in), false, 0).Error(); got != tt.want {
				t.Errorf("exit reason of %#x = %q, want %q", uint32(tt.in), got, tt.want)
			}
		})
	}
}
