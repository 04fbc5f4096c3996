package server

import (
	"strings"
	"testing"
)

// TestOpenStoreErrors checks that a --store the server cannot use is
// refused with an error that says why and does not repeat the password.
func TestOpenStoreErrors(t *testing.T) {
	const secret = "s3cr3t-pw"
	for _, tc := range []struct {
		name, store, want string
	}{
		{"other scheme", "mysql://berth:" + secret + "@db/berth", "want a postgres:// or postgresql:// URL"},
		{"not a URL", "berth:" + secret + "@db", "want a postgres:// or postgresql:// URL"},
		{"bad URL", "postgres://berth:" + secret + "@[::1/berth", "cannot parse"},
		{"bad parameter", "postgres://berth:" + secret + "@localhost/berth?sslmode=sometimes", "sslmode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, _, err := openStore(t.Context(), Config{Store: tc.store, DataDir: t.TempDir()})
			if err == nil {
				st.Close()
				t.Fatalf("openStore(%q): no error", tc.store)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("openStore: %v; want an error saying %q", err, tc.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("openStore: error %q holds the password", err)
			}
		})
	}
}
