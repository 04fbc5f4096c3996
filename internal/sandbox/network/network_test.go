package network

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/berthrun/berth/internal/sandbox"
)

func TestCheckPool(t *testing.T) {
	tests := []struct {
		pool    string
		wantErr string
	}{
		{"10.213.0.0/16", ""},
		{"172.30.0.0/30", ""},
		{"10.213.0.0/31", "too small"},
		{"10.213.0.1/16", "host bits set (did you mean 10.213.0.0/16?)"},
		{"fd00::/64", "IPv4"},
		{"127.0.0.0/8", "unicast"},
		{"169.254.0.0/16", "unicast"},
		{"224.0.0.0/4", "unicast"},
	}
	for _, tt := range tests {
		t.Run(tt.pool, func(t *testing.T) {
			err := checkPool(netip.MustParsePrefix(tt.pool))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("checkPool = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), tt.pool) {
				t.Fatalf("checkPool = %v, want an error naming the pool and containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestLinkName(t *testing.T) {
	a, b := LinkName("/var/lib/berth/sandboxes/sandboxes/x"), LinkName("/var/lib/berth/sandboxes/sandboxes/y")
	if a == b {
		t.Errorf("two sandboxes share the link name %s", a)
	}
	if a != LinkName("/var/lib/berth/sandboxes/sandboxes/x") {
		t.Errorf("LinkName is not stable")
	}
	if !strings.HasPrefix(a, LinkPrefix) || len(a) > 15 {
		t.Errorf("LinkName = %q: want %s and at most 15 bytes, as link names are", a, LinkPrefix)
	}
}

func TestHostNameServers(t *testing.T) {
	file := filepath.Join(t.TempDir(), "resolv.conf")
	data := "# comment\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nnameserver ::1\nnameserver 2001:db8::53\nsearch example.com\nnameserver 192.0.2.53 # trailing\nnameserver\n"
	if err := os.WriteFile(file, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	got := hostNameServers(file)
	want := []netip.Addr{netip.MustParseAddr("10.255.255.53"), netip.MustParseAddr("192.0.2.53")}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("hostNameServers = %v, want %v (IPv4, not loopback)", got, want)
	}
	if got := hostNameServers(filepath.Join(t.TempDir(), "missing")); got != nil {
		t.Errorf("hostNameServers of a missing file = %v", got)
	}
}

func TestResolvConf(t *testing.T) {
	got := string(resolvConf([]netip.Addr{netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("198.51.100.53")}))
	if !strings.Contains(got, "nameserver 192.0.2.53\nnameserver 198.51.100.53\n") {
		t.Errorf("resolvConf = %q", got)
	}
	if got := string(resolvConf(nil)); strings.Contains(got, "nameserver") {
		t.Errorf("resolvConf without servers = %q, want no nameserver line", got)
	}
}

// TestPlan checks what Plan makes of a network: name servers for every
// networked sandbox; for an allow list, rules with host names resolved (here
// through the resolver's hosts file: localhost) and a hosts file that pins
// each name to an allowed address.
func TestPlan(t *testing.T) {
	dns := []netip.Addr{netip.MustParseAddr("192.0.2.53")}
	// Names resolve from /etc/hosts only: the test asks no name server.
	offline := &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("no name server in this test")
	}}
	m := &Manager{pool: DefaultPool, dns: dns, resolver: offline}
	out, err := m.Plan(t.Context(), "berthtest", sandbox.Network{Mode: sandbox.NetworkOutbound})
	if err != nil {
		t.Fatal(err)
	}
	if out.Hosts != nil || out.Allowed != nil || !strings.Contains(string(out.ResolvConf), "nameserver 192.0.2.53") {
		t.Errorf("outbound plan = hosts %q, allowed %v, resolv.conf %q", out.Hosts, out.Allowed, out.ResolvConf)
	}

	allow, err := sandbox.ParseDestinations("localhost:8443,198.51.100.0/24")
	if err != nil {
		t.Fatal(err)
	}
	a, err := m.Plan(t.Context(), "berthtest", sandbox.Network{Mode: sandbox.NetworkAllowlist, Allow: allow})
	if err != nil {
		t.Fatal(err)
	}
	want := []Rule{{Prefix: netip.MustParsePrefix("127.0.0.1/32"), Port: 8443}, {Prefix: netip.MustParsePrefix("198.51.100.0/24")}}
	if !reflect.DeepEqual(a.Allowed, want) {
		t.Errorf("allowed = %v, want %v", a.Allowed, want)
	}
	if !strings.Contains(string(a.Hosts), "127.0.0.1\tlocalhost\n") {
		t.Errorf("hosts = %q, want localhost pinned", a.Hosts)
	}

	for _, bad := range []sandbox.Network{
		{},
		{Mode: sandbox.NetworkNone},
		{Mode: sandbox.NetworkAllowlist},
		{Mode: sandbox.NetworkAllowlist, Allow: []sandbox.Destination{{Host: "no-such-host.invalid"}}},
	} {
		if _, err := m.Plan(t.Context(), "berthtest", bad); err == nil {
			t.Errorf("Plan(%+v) succeeded", bad)
		}
	}
}

// TestRemoveNothing checks that Remove of a network that does not exist (or
// no longer does) succeeds, as Cleanup needs after a crash.
func TestRemoveNothing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (netlink and nftables)")
	}
	link := LinkName(t.TempDir())
	if err := Remove(link, netip.MustParseAddr("10.253.255.254")); err != nil {
		t.Fatalf("Remove of nothing = %v", err)
	}
	if left, err := Exists(link); err != nil || left {
		t.Fatalf("Exists = %v, %v", left, err)
	}
}
