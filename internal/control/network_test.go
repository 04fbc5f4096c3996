package control

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/berthrun/berth/internal/sandbox"
)

// TestNormalizeNetwork checks the validation of BERTH_NETWORK and
// BERTH_NETWORK_ALLOW: each bad value is refused naming its variable.
func TestNormalizeNetwork(t *testing.T) {
	const mode, allow = "environmentVariables." + EnvNetwork, "environmentVariables." + EnvNetworkAllow
	many := strings.TrimSuffix(strings.Repeat("10.0.0.1,", maxAllowEntries+1), ",")
	cases := []struct {
		name  string
		env   map[string]string
		field string // "" means valid
		msg   string
	}{
		{"unset", nil, "", ""},
		{"none", map[string]string{EnvNetwork: "none"}, "", ""},
		{"outbound", map[string]string{EnvNetwork: "outbound"}, "", ""},
		{"allowlist", map[string]string{EnvNetwork: "allowlist", EnvNetworkAllow: "api.example.com:443, 10.1.0.0/16"}, "", ""},
		{"unknown mode", map[string]string{EnvNetwork: "PUBLIC"}, mode, `"PUBLIC" is not none, outbound or allowlist`},
		{"empty mode", map[string]string{EnvNetwork: ""}, mode, "is not none"},
		{"allowlist without list", map[string]string{EnvNetwork: "allowlist"}, allow, "is required"},
		{"list without allowlist", map[string]string{EnvNetworkAllow: "example.com"}, allow, "only used with"},
		{"list with outbound", map[string]string{EnvNetwork: "outbound", EnvNetworkAllow: "example.com"}, allow, "only used with"},
		{"empty list", map[string]string{EnvNetwork: "allowlist", EnvNetworkAllow: ""}, allow, "empty"},
		{"bad entry", map[string]string{EnvNetwork: "allowlist", EnvNetworkAllow: "example.com:http"}, allow, `"example.com:http"`},
		{"IPv6 entry", map[string]string{EnvNetwork: "allowlist", EnvNetworkAllow: "2001:db8::/32"}, allow, "IPv6"},
		{"too many entries", map[string]string{EnvNetwork: "allowlist", EnvNetworkAllow: many}, allow, "at most 64"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := validConfig()
			cfg.Env = c.env
			err := cfg.normalize(60)
			if c.field == "" {
				if err != nil {
					t.Fatalf("normalize: %v", err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("normalize = %v, want a ValidationError", err)
			}
			for _, f := range ve.Fields {
				if f.Field == c.field && strings.Contains(f.Message, c.msg) {
					return
				}
			}
			t.Fatalf("normalize = %v, want field %s with %q", err, c.field, c.msg)
		})
	}
}

// TestSandboxNetwork checks how a runtime's configuration and the server's
// policy map to a sandbox's network.
func TestSandboxNetwork(t *testing.T) {
	allowed := []sandbox.Destination{
		{Host: "api.example.com", Port: 443},
		{Prefix: netip.MustParsePrefix("10.1.0.0/16")},
	}
	cases := []struct {
		name    string
		mode    string // networkMode; "" means PUBLIC
		env     map[string]string
		policy  NetworkPolicy
		want    sandbox.Network
		wantErr string
	}{
		{name: "PUBLIC is outbound", want: sandbox.Network{Mode: sandbox.NetworkOutbound}},
		{name: "PUBLIC without outbound is none", policy: NetworkPolicy{NoOutbound: true}, want: sandbox.Network{Mode: sandbox.NetworkNone}},
		{name: "none", env: map[string]string{EnvNetwork: "none"}, want: sandbox.Network{Mode: sandbox.NetworkNone}},
		{name: "none without outbound", env: map[string]string{EnvNetwork: "none"}, policy: NetworkPolicy{NoOutbound: true},
			want: sandbox.Network{Mode: sandbox.NetworkNone}},
		{name: "allowlist", env: map[string]string{EnvNetwork: "allowlist", EnvNetworkAllow: "api.example.com:443,10.1.0.0/16"},
			want: sandbox.Network{Mode: sandbox.NetworkAllowlist, Allow: allowed}},
		{name: "outbound refused", env: map[string]string{EnvNetwork: "outbound"}, policy: NetworkPolicy{NoOutbound: true},
			wantErr: "environmentVariables.BERTH_NETWORK: outbound: this Berth server gives sandboxes no network access"},
		{name: "allowlist refused", env: map[string]string{EnvNetwork: "allowlist", EnvNetworkAllow: "10.0.0.1"}, policy: NetworkPolicy{NoOutbound: true},
			wantErr: "--sandbox-outbound=false"},
		{name: "VPC", mode: "VPC", wantErr: "networkMode VPC is not supported"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := validConfig()
			cfg.Network.Mode = c.mode
			cfg.Env = c.env
			got, err := cfg.SandboxNetwork(c.policy)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("SandboxNetwork = %+v, %v; want an error containing %q", got, err, c.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, c.want) {
				t.Fatalf("SandboxNetwork = %+v, %v; want %+v", got, err, c.want)
			}
		})
	}
}
