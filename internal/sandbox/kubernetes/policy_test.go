package kubernetes

import "testing"

func TestEgressTo(t *testing.T) {
	tests := []struct {
		url, cidr string
		port      int
		ok        bool
	}{
		{"http://10.244.0.1:4781/bundles/abc", "10.244.0.1/32", 4781, true},
		{"http://10.0.0.5/bundles/abc", "10.0.0.5/32", 80, true},
		{"https://10.0.0.5/b", "10.0.0.5/32", 443, true},
		{"http://[fd00::1]:8443/b", "fd00::1/128", 8443, true},
		{"http://berth.berth.svc:4781/b", "", 0, false}, // a policy cannot name a host
		{"::not a url", "", 0, false},
	}
	for _, tt := range tests {
		rule, ok := egressTo(tt.url)
		if ok != tt.ok {
			t.Errorf("egressTo(%q) ok = %v, want %v", tt.url, ok, tt.ok)
			continue
		}
		if !ok {
			continue
		}
		if got := rule.To[0].IPBlock.CIDR; got != tt.cidr {
			t.Errorf("egressTo(%q) admits %s, want %s", tt.url, got, tt.cidr)
		}
		if got := rule.Ports[0].Port.IntValue(); got != tt.port {
			t.Errorf("egressTo(%q) port %d, want %d", tt.url, got, tt.port)
		}
	}
}
