package sandbox

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// NetworkMode says what a sandbox may reach through the network beyond its
// own loopback. In every mode Berth still reaches the agent (by dialling
// inside the sandbox's network namespace), and no mode lets a sandbox reach
// another sandbox, the host's own addresses or Berth's API.
type NetworkMode string

const (
	// NetworkNone gives the sandbox loopback only. The zero NetworkMode
	// means NetworkNone too.
	NetworkNone NetworkMode = "none"
	// NetworkOutbound lets the sandbox open connections to anything the
	// host can reach, through NAT behind the host's address, except the
	// host itself, other sandboxes and link-local addresses (such as a
	// cloud's instance metadata service).
	NetworkOutbound NetworkMode = "outbound"
	// NetworkAllowlist lets the sandbox open connections only to the
	// destinations of Network.Allow, through NAT as with NetworkOutbound.
	NetworkAllowlist NetworkMode = "allowlist"
)

// ParseNetworkMode parses "none", "outbound" or "allowlist".
func ParseNetworkMode(s string) (NetworkMode, error) {
	switch m := NetworkMode(s); m {
	case NetworkNone, NetworkOutbound, NetworkAllowlist:
		return m, nil
	}
	return "", fmt.Errorf("network mode %q: want none, outbound or allowlist", s)
}

// Network is a sandbox's network configuration.
type Network struct {
	// Mode is the sandbox's network mode; "" means NetworkNone.
	Mode NetworkMode
	// Allow lists what a NetworkAllowlist sandbox may connect to. It must
	// be empty in the other modes.
	Allow []Destination
}

// Enabled reports whether the sandbox has a network beyond loopback.
func (n Network) Enabled() bool {
	return n.Mode == NetworkOutbound || n.Mode == NetworkAllowlist
}

// Validate checks that the mode is known and the allow list fits it.
func (n Network) Validate() error {
	switch n.Mode {
	case "", NetworkNone, NetworkOutbound:
		if len(n.Allow) > 0 {
			return fmt.Errorf("network mode %q takes no allow list (it has %d entries)", n.modeName(), len(n.Allow))
		}
	case NetworkAllowlist:
		if len(n.Allow) == 0 {
			return fmt.Errorf("network mode allowlist needs at least one allowed destination")
		}
		for _, d := range n.Allow {
			if err := d.validate(); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("network mode %q: want none, outbound or allowlist", n.Mode)
	}
	return nil
}

func (n Network) modeName() string {
	if n.Mode == "" {
		return string(NetworkNone)
	}
	return string(n.Mode)
}

// Destination is one entry of an allow list: a host name or an IPv4 prefix,
// and optionally one port (of TCP and UDP).
type Destination struct {
	// Host is a DNS name, resolved (IPv4 addresses only) when a sandbox
	// starts. Exactly one of Host and Prefix is set.
	Host string
	// Prefix is an IPv4 address (a /32) or network.
	Prefix netip.Prefix
	// Port is the only port allowed; 0 allows every port.
	Port uint16
}

// String formats d as ParseDestination reads it.
func (d Destination) String() string {
	s := d.Host
	if s == "" {
		s = d.Prefix.String()
		if d.Prefix.IsSingleIP() {
			s = d.Prefix.Addr().String()
		}
	}
	if d.Port != 0 {
		s += ":" + strconv.Itoa(int(d.Port))
	}
	return s
}

// ParseDestination parses one allow list entry: a host name, an IPv4 address
// or an IPv4 CIDR, each optionally followed by ":PORT" ("api.example.com",
// "api.example.com:443", "203.0.113.7", "198.51.100.0/24:8443"). Sandboxes
// have IPv4 only, so IPv6 entries are refused.
func ParseDestination(s string) (Destination, error) {
	var d Destination
	host := s
	if strings.Count(s, ":") > 1 || strings.HasPrefix(s, "[") {
		return d, fmt.Errorf("destination %q: IPv6 is not supported, sandboxes have IPv4 only", s)
	}
	if h, port, ok := strings.Cut(s, ":"); ok {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return d, fmt.Errorf("destination %q: port %q: want a number from 1 to 65535", s, port)
		}
		host, d.Port = h, uint16(n)
	}
	switch {
	case host == "":
		return d, fmt.Errorf("destination %q: no host, address or CIDR", s)
	case strings.Contains(host, "/"):
		p, err := netip.ParsePrefix(host)
		if err != nil {
			return d, fmt.Errorf("destination %q: not a CIDR such as 198.51.100.0/24", s)
		}
		if !p.Addr().Is4() {
			return d, fmt.Errorf("destination %q: IPv6 is not supported, sandboxes have IPv4 only", s)
		}
		if p.Masked() != p {
			return d, fmt.Errorf("destination %q: CIDR has host bits set (did you mean %s?)", s, p.Masked())
		}
		d.Prefix = p
	default:
		if a, err := netip.ParseAddr(host); err == nil {
			if !a.Is4() {
				return d, fmt.Errorf("destination %q: IPv6 is not supported, sandboxes have IPv4 only", s)
			}
			d.Prefix = netip.PrefixFrom(a, 32)
			break
		}
		if err := checkHostName(host); err != nil {
			return d, fmt.Errorf("destination %q: %w", s, err)
		}
		d.Host = strings.ToLower(strings.TrimSuffix(host, "."))
	}
	return d, nil
}

// ParseDestinations parses a comma-separated allow list; blanks around
// entries are ignored, empty entries are not allowed.
func ParseDestinations(list string) ([]Destination, error) {
	var out []Destination
	for i, e := range strings.Split(list, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			return nil, fmt.Errorf("entry %d is empty", i+1)
		}
		d, err := ParseDestination(e)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

func (d Destination) validate() error {
	switch {
	case d.Host == "" && !d.Prefix.IsValid():
		return fmt.Errorf("destination %+v: neither a host nor a prefix", d)
	case d.Host != "" && d.Prefix.IsValid():
		return fmt.Errorf("destination %q: both a host and a prefix (%s)", d.Host, d.Prefix)
	case d.Host != "":
		if err := checkHostName(d.Host); err != nil {
			return fmt.Errorf("destination %q: %w", d.Host, err)
		}
	case !d.Prefix.Addr().Is4():
		return fmt.Errorf("destination %s: IPv6 is not supported, sandboxes have IPv4 only", d.Prefix)
	}
	return nil
}

// checkHostName accepts DNS names of letters, digits, hyphens and
// underscores in dot-separated labels.
func checkHostName(h string) error {
	h = strings.TrimSuffix(h, ".")
	if len(h) == 0 || len(h) > 253 {
		return fmt.Errorf("not a host name (1 to 253 characters)")
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("not a host name: label %q must be 1 to 63 characters, not starting or ending with '-'", label)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Errorf("not a host name: %q has %q", label, r)
			}
		}
	}
	return nil
}
