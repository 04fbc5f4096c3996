// Package network gives sandboxes a network beyond loopback: outbound access
// through NAT, optionally limited to an allow list, with nothing of the host
// and no other sandbox reachable.
//
// The sandbox's network namespace is made by the sandbox's driver (owned by
// the sandbox's user namespace, which sysfs needs); the Manager sets it up
// before the agent runs (Plan, then Attach). It adds a veth pair: one end ("eth0")
// inside the namespace, the other on the host. The pair gets a /30 of the
// Manager's pool: the host end is the sandbox's gateway, the other end its
// address, with a default route through the gateway. The host forwards the
// sandbox's packets and masquerades them behind its own address.
//
// Filtering is done with nftables, in one table (family inet, so IPv6 too)
// shared by every sandbox of the host, TableName. Its base chains see every
// packet of the host, so they must cost the same whatever the number of
// sandboxes: they match the host links of sandboxes with one hash lookup in
// a set of link names, and send what a sandbox sends, through a verdict map
// keyed by link name, to a chain of that sandbox's own. The base chains:
//   - input: nothing from a sandbox reaches the host itself (any of its
//     addresses, the gateway included, so not Berth's API either);
//   - forward: towards a sandbox only replies pass, so nothing can open a
//     connection to it; from a sandbox, its chain decides: packets with a
//     source other than its address, or to the pool (other sandboxes), are
//     refused; in outbound mode so is link-local (a cloud's metadata
//     service); then outbound mode accepts, allowlist mode accepts only the
//     allowed destinations;
//   - output: the host's own processes cannot open connections to a
//     sandbox either (Berth reaches agents inside their namespace, never
//     through the veth);
//   - postrouting (nat): masquerade what sandboxes send.
//
// Filter refusals are TCP resets or ICMP errors, so an agent's attempt fails
// at once instead of timing out.
//
// A sandbox's chain and its elements in the set and the map are added in
// one transaction and removed in one, so concurrent starts and stops, of
// one Berth process or several, never see or leave a sandbox half-filtered.
// Removing them and the link removes everything (the namespace goes with
// the sandbox); both are named from the sandbox alone (LinkName), so Remove
// needs no record and works after a crash, and Prune removes the filters of
// links that are gone. The table is made when a Manager sets up its first
// sandbox network, and then stays: empty, it costs a packet a lookup or two
// in empty sets (but its rules turn connection tracking on for the host, as
// any stateful firewall does). Berth never touches a table it did not
// create.
//
// The host must forward IPv4: New turns net.ipv4.ip_forward on (as Docker
// does) and leaves it on.
package network

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/sandbox"
)

// DefaultPool is the address pool of sandboxes when Options.Pool is not set.
var DefaultPool = netip.MustParsePrefix("10.213.0.0/16")

// LinkPrefix starts the name of every host link (and sandbox chain) the
// Manager creates.
const LinkPrefix = "berth"

// subnetBits is the size of each sandbox's subnet: a /30 holds the network
// address, the gateway, the sandbox and the broadcast address.
const subnetBits = 30

// Options configure a Manager.
type Options struct {
	// Pool is the IPv4 range sandboxes get their /30 from. Zero means
	// DefaultPool. It must not overlap any network the host routes to
	// (New checks).
	Pool netip.Prefix
	// DNS are the name servers in a networked sandbox's /etc/resolv.conf.
	// Nil means the host's own from /etc/resolv.conf, less those on
	// loopback (which, inside the sandbox, would be the sandbox's own).
	DNS []netip.Addr
	// LockFile serialises address allocation between the Berth processes
	// of one host. Empty means /run/berth-network.lock.
	LockFile string
	// Resolver resolves the host names of allow lists. Nil means
	// net.DefaultResolver.
	Resolver *net.Resolver
	// Logger receives the Manager's logs. Nil means slog.Default().
	Logger *slog.Logger
}

// Manager sets up and removes the networks of sandboxes. It is safe for
// concurrent use.
type Manager struct {
	pool     netip.Prefix
	dns      []netip.Addr
	mtu      int
	lockFile string
	resolver *net.Resolver
	log      *slog.Logger

	mu   sync.Mutex // serialises allocation within the process
	next uint64     // the subnet index allocation looks at first
	// made says the table was made (or made again) by this Manager:
	// on its first Attach, so that a Berth whose sandboxes have no
	// network adds no table, and with it no connection tracking, to
	// the host's packets.
	made bool
}

// ErrUnavailable reports that the host cannot give sandboxes a network (not
// root, or a kernel without veth, nf_tables or NAT).
var ErrUnavailable = errors.New("sandbox network unavailable")

// New checks that the host can give sandboxes a network, turns IPv4
// forwarding on, and returns a Manager. Its error wraps ErrUnavailable when
// the host cannot.
func New(opts Options) (*Manager, error) {
	if uid := os.Geteuid(); uid != 0 {
		return nil, fmt.Errorf("%w: needs root, and this process runs as uid %d", ErrUnavailable, uid)
	}
	pool := opts.Pool
	if !pool.IsValid() {
		pool = DefaultPool
	}
	if err := checkPool(pool); err != nil {
		return nil, err
	}
	m := &Manager{
		pool:     pool,
		dns:      opts.DNS,
		mtu:      1500,
		lockFile: opts.LockFile,
		resolver: opts.Resolver,
		log:      opts.Logger,
	}
	if m.lockFile == "" {
		m.lockFile = "/run/berth-network.lock"
	}
	if m.resolver == nil {
		m.resolver = net.DefaultResolver
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	if err := probeNFTables(); err != nil {
		return nil, fmt.Errorf("%w: nftables: %v", ErrUnavailable, err)
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("%w: list routes: %v", ErrUnavailable, err)
	}
	for _, r := range routes {
		if r.Dst == nil || isDefault(r.Dst) {
			// The default route's link bounds the path MTU of
			// everything a sandbox sends.
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil && l.Attrs().MTU > 0 {
				m.mtu = min(l.Attrs().MTU, 1500)
			}
			continue
		}
		l, err := netlink.LinkByIndex(r.LinkIndex)
		if err == nil && strings.HasPrefix(l.Attrs().Name, LinkPrefix) {
			continue // a sandbox's, of this Berth or another
		}
		dst, ok := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		if ok && netip.PrefixFrom(dst.Unmap(), ones).Overlaps(pool) {
			return nil, fmt.Errorf("sandbox network %s overlaps the host's route to %s: choose another pool", pool, r.Dst)
		}
	}
	if m.dns == nil {
		m.dns = hostNameServers("/etc/resolv.conf")
		if len(m.dns) == 0 {
			m.log.Warn("the host's /etc/resolv.conf names no name server sandboxes can reach (loopback ones are not): networked sandboxes resolve nothing unless name servers are configured")
		}
	}
	if err := enableForwarding(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return m, nil
}

// isDefault reports whether dst is 0.0.0.0/0.
func isDefault(dst *net.IPNet) bool {
	ones, _ := dst.Mask.Size()
	return ones == 0
}

// Pool returns the address pool sandboxes get their subnets from.
func (m *Manager) Pool() netip.Prefix { return m.pool }

// checkPool requires an IPv4 pool of at least one /30.
func checkPool(p netip.Prefix) error {
	if !p.Addr().Is4() {
		return fmt.Errorf("sandbox network %s: want an IPv4 range such as %s", p, DefaultPool)
	}
	if p.Masked() != p {
		return fmt.Errorf("sandbox network %s: host bits set (did you mean %s?)", p, p.Masked())
	}
	if p.Bits() > subnetBits {
		return fmt.Errorf("sandbox network %s: too small, each sandbox needs a /%d", p, subnetBits)
	}
	if p.Addr().IsLoopback() || p.Addr().IsMulticast() || p.Addr().IsLinkLocalUnicast() || p.Addr().IsUnspecified() {
		return fmt.Errorf("sandbox network %s: not a unicast range a host can route", p)
	}
	return nil
}

// LinkName returns the name of the host link and nftables chain of the
// sandbox that key names uniquely on the host (a driver's state directory
// and the sandbox's id): LinkPrefix and 10 hex digits of a hash, as link
// names have at most 15 bytes.
func LinkName(key string) string {
	sum := sha256.Sum256([]byte(key))
	return LinkPrefix + hex.EncodeToString(sum[:5])
}

// Attachment is the network of one sandbox.
type Attachment struct {
	// Link is the name of the host end of the veth pair, and of the
	// sandbox's nftables chain.
	Link string
	// Addr is the sandbox's address, Gateway the host end's.
	Addr, Gateway netip.Addr
	// ResolvConf and Hosts are what the sandbox's /etc/resolv.conf and
	// /etc/hosts should hold.
	ResolvConf, Hosts []byte
	// Allowed is what an allowlist sandbox may reach, its host names
	// resolved; nil in outbound mode.
	Allowed []Rule

	mode sandbox.NetworkMode
}

// Rule is one allowed destination after name resolution.
type Rule struct {
	Prefix netip.Prefix
	Port   uint16 // 0: every port
}

// Plan prepares the network n (outbound or allowlist) of the sandbox whose
// host link and chain are to be named link (see LinkName): it resolves the
// host names of an allow list, and says what the sandbox's /etc/resolv.conf
// and /etc/hosts hold. Attach then sets it up.
func (m *Manager) Plan(ctx context.Context, link string, n sandbox.Network) (*Attachment, error) {
	if err := n.Validate(); err != nil {
		return nil, err
	}
	if !n.Enabled() {
		return nil, fmt.Errorf("network mode %q needs no network of its own", n.Mode)
	}
	a := &Attachment{Link: link, mode: n.Mode}
	if n.Mode == sandbox.NetworkAllowlist {
		var hosts strings.Builder
		rules, err := m.resolve(ctx, n.Allow, &hosts)
		if err != nil {
			return nil, err
		}
		a.Allowed = rules
		a.Hosts = []byte("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" + hosts.String())
	}
	a.ResolvConf = resolvConf(m.dns)
	return a, nil
}

// Attach sets up the network a in the network namespace at nsPath (such as
// /proc/PID/ns/net of the sandbox's first process, before the agent runs):
// a link, its address and default route inside; on the host the other end
// of the link, its address and the filter. It fills a's addresses. On
// failure it removes what it made on the host.
func (m *Manager) Attach(a *Attachment, nsPath string) error {
	if err := m.create(a, nsPath, a.mode); err != nil {
		if rerr := Remove(a.Link, a.Addr); rerr != nil {
			m.log.Warn("remove a sandbox network that failed to set up", "link", a.Link, "err", rerr)
		}
		return err
	}
	return nil
}

// resolve turns an allow list into rules, resolving host names to their
// IPv4 addresses, and writes a hosts file line for each name so that the
// sandbox uses the very addresses it is allowed.
func (m *Manager) resolve(ctx context.Context, allow []sandbox.Destination, hosts *strings.Builder) ([]Rule, error) {
	var rules []Rule
	for _, d := range allow {
		if d.Host == "" {
			rules = append(rules, Rule{Prefix: d.Prefix, Port: d.Port})
			continue
		}
		addrs, err := m.resolver.LookupNetIP(ctx, "ip4", d.Host)
		if err != nil {
			return nil, fmt.Errorf("resolve allowed host %s: %w", d.Host, err)
		}
		var names []string
		for _, a := range addrs {
			a = a.Unmap()
			rules = append(rules, Rule{Prefix: netip.PrefixFrom(a, 32), Port: d.Port})
			names = append(names, a.String())
		}
		// The first address only: a hosts file line per address would
		// work too, but resolvers return the first anyway.
		if len(names) > 0 {
			fmt.Fprintf(hosts, "%s\t%s\n", names[0], d.Host)
		}
	}
	return rules, nil
}

// create does the work of Create.
func (m *Manager) create(a *Attachment, nsPath string, mode sandbox.NetworkMode) error {
	// Allocation and creation of the host address happen under one lock,
	// shared with other Berth processes: an address is taken once it is
	// on a host link.
	m.mu.Lock()
	defer m.mu.Unlock()
	unlock, err := lockFile(m.lockFile)
	if err != nil {
		return err
	}
	defer unlock()

	subnet, err := m.allocate()
	if err != nil {
		return err
	}
	a.Gateway = subnet.Addr().Next()
	a.Addr = a.Gateway.Next()

	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", nsPath, err)
	}
	defer ns.Close()
	inside, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("enter network namespace %s: %w", nsPath, err)
	}
	defer inside.Close()

	attrs := netlink.NewLinkAttrs()
	attrs.Name = a.Link
	attrs.MTU = m.mtu
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ns))}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s: %w", a.Link, err)
	}
	host, err := netlink.LinkByName(a.Link)
	if err != nil {
		return fmt.Errorf("find veth %s: %w", a.Link, err)
	}
	// The host end needs no IPv6 at all; without it, no link-local
	// address of the host faces the sandbox.
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+a.Link+"/disable_ipv6", []byte("1"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("disable IPv6 on %s: %w", a.Link, err)
	}
	if err := netlink.AddrAdd(host, addr(a.Gateway)); err != nil {
		return fmt.Errorf("address veth %s: %w", a.Link, err)
	}
	// The filter is in place before the link comes up: no packet of the
	// sandbox is ever unfiltered.
	if !m.made {
		// Made again even if it exists: its base rules are then this
		// version's.
		if err := ensureTable(); err != nil {
			return err
		}
		m.made = true
	}
	if err := addSandbox(a, mode, m.pool); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return fmt.Errorf("bring up veth %s: %w", a.Link, err)
	}

	lo, err := inside.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find loopback of %s: %w", nsPath, err)
	}
	if err := inside.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring up loopback of %s: %w", nsPath, err)
	}
	eth, err := inside.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("find eth0 of %s: %w", nsPath, err)
	}
	if err := inside.AddrAdd(eth, addr(a.Addr)); err != nil {
		return fmt.Errorf("address eth0 of %s: %w", nsPath, err)
	}
	if err := inside.LinkSetUp(eth); err != nil {
		return fmt.Errorf("bring up eth0 of %s: %w", nsPath, err)
	}
	gw := net.IP(a.Gateway.AsSlice())
	if err := inside.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw}); err != nil {
		return fmt.Errorf("add default route of %s: %w", nsPath, err)
	}
	return nil
}

// addr is a's address in its sandbox /30, for netlink.
func addr(a netip.Addr) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(subnetBits, 32)}}
}

// allocate returns a /30 of the pool that no host address is in.
func (m *Manager) allocate() (netip.Prefix, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("list host addresses: %w", err)
	}
	used := map[netip.Prefix]bool{}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if m.pool.Contains(ip) {
			used[netip.PrefixFrom(ip, subnetBits).Masked()] = true
		}
	}
	size := uint64(1) << (32 - subnetBits)
	count := uint64(1) << (subnetBits - m.pool.Bits())
	base := m.pool.Addr().As4()
	start := uint64(base[0])<<24 | uint64(base[1])<<16 | uint64(base[2])<<8 | uint64(base[3])
	// Round robin from after the last subnet given: an address is
	// reused as late as possible.
	for j := range count {
		i := (m.next + j) % count
		v := start + i*size
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), subnetBits)
		if !used[p] {
			m.next = i + 1
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("sandbox network %s is full: all %d subnets are in use", m.pool, count)
}

// Remove deletes what Attach made on the host for link: the sandbox's filter
// (its chain and its elements in the table's set and map) and the host end of the veth pair (which goes by itself with the
// sandbox's namespace, but the namespace may outlive the sandbox for a
// moment); and, if addr (the sandbox's address) is valid, the connection
// tracking entries of the sandbox's connections, so that a late reply
// cannot reach the next sandbox given that address. What does not exist is
// skipped, so Remove works on a half-made network and after a crash,
// without a Manager.
func Remove(link string, addr netip.Addr) error {
	var errs []error
	if err := deleteSandbox(link); err != nil {
		errs = append(errs, err)
	}
	if err := deleteLegacyTable(link); err != nil {
		errs = append(errs, err)
	}
	if l, err := netlink.LinkByName(link); err == nil {
		if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete veth %s: %w", link, err))
		}
	} else if !errors.As(err, new(netlink.LinkNotFoundError)) {
		errs = append(errs, fmt.Errorf("find veth %s: %w", link, err))
	}
	if addr.Is4() {
		f := &netlink.ConntrackFilter{}
		if err := f.AddIP(netlink.ConntrackOrigSrcIP, net.IP(addr.AsSlice())); err != nil {
			errs = append(errs, fmt.Errorf("forget connections of %s: %w", addr, err))
		} else if _, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, f); err != nil {
			errs = append(errs, fmt.Errorf("forget connections of %s: %w", addr, err))
		}
	}
	return errors.Join(errs...)
}

// Exists reports whether anything of link's network is left on the host:
// the link, or its filter in the table.
func Exists(link string) (bool, error) {
	if _, err := netlink.LinkByName(link); err == nil {
		return true, nil
	} else if !errors.As(err, new(netlink.LinkNotFoundError)) {
		return false, err
	}
	return hasSandbox(link)
}

// Prune removes from the table the filters of sandboxes whose host link is
// gone: a sandbox's link goes with its namespace when it dies, so after a
// crash its filter may outlive it. A filter is added only once its link
// exists, so a sandbox being set up is never pruned. It returns the links
// it pruned.
func Prune() ([]string, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("prune sandbox filters: nftables: %w", err)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("prune sandbox filters: list chains: %w", err)
	}
	var pruned []string
	var errs []error
	for _, ch := range chains {
		if ch.Table.Name != TableName || ch.Hooknum != nil || !strings.HasPrefix(ch.Name, LinkPrefix) {
			continue
		}
		if _, err := netlink.LinkByName(ch.Name); err == nil {
			continue
		} else if !errors.As(err, new(netlink.LinkNotFoundError)) {
			errs = append(errs, fmt.Errorf("find veth %s: %w", ch.Name, err))
			continue
		}
		if err := deleteSandbox(ch.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		pruned = append(pruned, ch.Name)
	}
	if err := errors.Join(errs...); err != nil {
		return pruned, fmt.Errorf("prune sandbox filters: %w", err)
	}
	return pruned, nil
}

// lockFile takes an exclusive lock on file, creating it, and returns what
// releases it.
func lockFile(file string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return nil, fmt.Errorf("lock sandbox network: %w", err)
	}
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock sandbox network: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock sandbox network %s: %w", file, err)
	}
	return func() { f.Close() }, nil
}

// enableForwarding turns IPv4 forwarding on.
func enableForwarding() error {
	const file = "/proc/sys/net/ipv4/ip_forward"
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("read %s: %w", file, err)
	}
	if strings.TrimSpace(string(data)) == "1" {
		return nil
	}
	if err := os.WriteFile(file, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("turn on IPv4 forwarding: %w", err)
	}
	return nil
}

// hostNameServers returns the name servers of a resolv.conf file that a
// sandbox can reach: IPv4 and not loopback.
func hostNameServers(file string) []netip.Addr {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil || !a.Is4() || a.IsLoopback() {
			continue
		}
		out = append(out, a)
	}
	return out
}

// resolvConf is a sandbox's /etc/resolv.conf. Without name servers it
// names none, and the C library then tries the sandbox's own loopback,
// where none listens: lookups fail at once.
func resolvConf(servers []netip.Addr) []byte {
	var b strings.Builder
	b.WriteString("# Written by Berth for this sandbox.\n")
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	return []byte(b.String())
}
