package sandbox

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseDestination(t *testing.T) {
	tests := []struct {
		in      string
		want    Destination
		wantErr string
	}{
		{in: "api.example.com", want: Destination{Host: "api.example.com"}},
		{in: "API.Example.com.:443", want: Destination{Host: "api.example.com", Port: 443}},
		{in: "203.0.113.7", want: Destination{Prefix: netip.MustParsePrefix("203.0.113.7/32")}},
		{in: "203.0.113.7:8443", want: Destination{Prefix: netip.MustParsePrefix("203.0.113.7/32"), Port: 8443}},
		{in: "198.51.100.0/24", want: Destination{Prefix: netip.MustParsePrefix("198.51.100.0/24")}},
		{in: "198.51.100.0/24:53", want: Destination{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Port: 53}},
		{in: "my_host", want: Destination{Host: "my_host"}},
		{in: "", wantErr: "no host"},
		{in: ":443", wantErr: "no host"},
		{in: "example.com:0", wantErr: "port"},
		{in: "example.com:65536", wantErr: "port"},
		{in: "example.com:https", wantErr: "port"},
		{in: "198.51.100.1/24", wantErr: "host bits set (did you mean 198.51.100.0/24?)"},
		{in: "198.51.100.0/33", wantErr: "not a CIDR"},
		{in: "2001:db8::1", wantErr: "IPv6"},
		{in: "[2001:db8::1]:443", wantErr: "IPv6"},
		{in: "2001:db8::/32", wantErr: "IPv6"},
		{in: "-bad.example.com", wantErr: "label"},
		{in: "a..b", wantErr: "label"},
		{in: "exa mple.com", wantErr: "not a host name"},
		{in: "http://example.com", wantErr: "port"},
		{in: strings.Repeat("a", 64) + ".com", wantErr: "label"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseDestination(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), tt.in) {
					t.Fatalf("ParseDestination(%q) = %v, %v; want an error naming the entry and containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseDestination(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
			if again, err := ParseDestination(got.String()); err != nil || again != got {
				t.Errorf("ParseDestination(%q.String() = %q) = %+v, %v; want it back", tt.in, got.String(), again, err)
			}
		})
	}
}

func TestParseDestinations(t *testing.T) {
	got, err := ParseDestinations(" api.example.com:443 , 10.1.0.0/16")
	if err != nil || len(got) != 2 || got[0].Host != "api.example.com" || got[1].Prefix != netip.MustParsePrefix("10.1.0.0/16") {
		t.Fatalf("ParseDestinations = %+v, %v", got, err)
	}
	for _, bad := range []string{"", "a.com,,b.com", "a.com,"} {
		if _, err := ParseDestinations(bad); err == nil || !strings.Contains(err.Error(), "empty") {
			t.Errorf("ParseDestinations(%q) = %v, want an error about an empty entry", bad, err)
		}
	}
}

func TestNetworkValidate(t *testing.T) {
	one := []Destination{{Host: "example.com"}}
	tests := []struct {
		name    string
		n       Network
		enabled bool
		wantErr string
	}{
		{"zero", Network{}, false, ""},
		{"none", Network{Mode: NetworkNone}, false, ""},
		{"outbound", Network{Mode: NetworkOutbound}, true, ""},
		{"allowlist", Network{Mode: NetworkAllowlist, Allow: one}, true, ""},
		{"allowlist without entries", Network{Mode: NetworkAllowlist}, true, "at least one"},
		{"none with entries", Network{Mode: NetworkNone, Allow: one}, false, "takes no allow list"},
		{"outbound with entries", Network{Mode: NetworkOutbound, Allow: one}, true, "takes no allow list"},
		{"unknown mode", Network{Mode: "bridge"}, false, `"bridge"`},
		{"empty destination", Network{Mode: NetworkAllowlist, Allow: []Destination{{}}}, true, "neither"},
		{"IPv6 destination", Network{Mode: NetworkAllowlist, Allow: []Destination{{Prefix: netip.MustParsePrefix("::1/128")}}}, true, "IPv6"},
		{"host and prefix", Network{Mode: NetworkAllowlist, Allow: []Destination{{Host: "a.com", Prefix: netip.MustParsePrefix("10.0.0.0/8")}}}, true, "both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.n.Enabled(); got != tt.enabled {
				t.Errorf("Enabled = %v, want %v", got, tt.enabled)
			}
			err := tt.n.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseNetworkMode(t *testing.T) {
	for _, s := range []string{"none", "outbound", "allowlist"} {
		if m, err := ParseNetworkMode(s); err != nil || string(m) != s {
			t.Errorf("ParseNetworkMode(%q) = %q, %v", s, m, err)
		}
	}
	for _, s := range []string{"", "OUTBOUND", "public"} {
		if _, err := ParseNetworkMode(s); err == nil {
			t.Errorf("ParseNetworkMode(%q) succeeded", s)
		}
	}
}
