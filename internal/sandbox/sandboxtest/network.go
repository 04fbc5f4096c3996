package sandboxtest

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/sandbox"
	"github.com/berthrun/berth/internal/sandbox/network"
)

// NetworkConfig tells RunNetwork how to make a driver whose sandboxes can
// have a network.
type NetworkConfig struct {
	// NewDriver returns a driver over stateDir (as Config.NewDriver) whose
	// sandboxes get their networks as host says.
	NewDriver func(tb testing.TB, stateDir string, host NetworkHost) sandbox.Driver
	// Link returns the name of the host link and nftables chain of
	// sandbox id of a driver over stateDir.
	Link func(stateDir, id string) string
	// StatePaths is as Config.StatePaths. Optional.
	StatePaths func(stateDir, id string) []string
	// UserSpaceKernel is as Config.UserSpaceKernel: the agent's user
	// namespaces and /sys are the user-space kernel's own.
	UserSpaceKernel bool
}

// NetworkHost is how the host gives sandboxes their networks in a test.
type NetworkHost struct {
	// Pool is where sandboxes get their subnets from.
	Pool netip.Prefix
	// Resolver resolves the host names of allow lists (nil: the host's
	// resolver). The suite's answers from memory, so no name server is
	// asked.
	Resolver *net.Resolver
}

// outsideName is the host name of the outside host's first address, which
// the suite's resolver knows (.test is reserved for tests).
const outsideName = "outside.berth.test"

// outside is a host "on the internet" that the test makes: a network
// namespace of its own, joined to the host by a veth pair, with two
// addresses and an HTTP server on two ports of every address. The server
// answers with the address the request came from.
type outside struct {
	host        netip.Addr // the host's end of the link: what NAT should show
	addr, other netip.Addr // the outside host's two addresses
	port, port2 int        // the server's ports
}

// url is the address of the outside server at a and port.
func (o *outside) url(a netip.Addr, port int) string {
	return "http://" + net.JoinHostPort(a.String(), strconv.Itoa(port)) + "/"
}

// RunNetwork checks the network modes of sandboxes against an outside host
// the test makes (in 10.254.0.0/16, on a veth of its own): none reaches
// nothing; outbound reaches the outside host, which sees the host's address
// (NAT); allowlist reaches the allowed address and port only. In every mode
// a sandbox reaches neither another sandbox nor any address of the host
// (its gateway, a listener standing for Berth's API), and nothing of the
// host reaches the sandbox through its link. After Stop, and after a crash
// followed by Cleanup, no link, address, nftables chain or set element,
// tracked connection or namespace file
// of the sandbox is left. It needs root.
func RunNetwork(t *testing.T, cfg NetworkConfig) {
	if os.Geteuid() != 0 {
		t.Skip("sandbox networks need root")
	}
	out := newOutside(t)
	pool := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 253, randomByte(), 0}), 24)
	checkUnrouted(t, pool)

	// A listener standing for Berth's API, on every host address.
	api, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close() })
	go acceptAndClose(api)
	apiPort := api.Addr().(*net.TCPAddr).Port

	s := &suite{cfg: Config{UserSpaceKernel: cfg.UserSpaceKernel}, code: BuildAgent(t), prefix: randomHex(3)}
	state := TempDir(t)
	resolver := memoryResolver(map[string]netip.Addr{outsideName: out.addr})
	d := cfg.NewDriver(t, state, NetworkHost{Pool: pool, Resolver: resolver})
	if err := d.Cleanup(t.Context()); err != nil {
		t.Fatalf("Cleanup of an empty state: %v", err)
	}
	allow := []sandbox.Destination{{Prefix: netip.PrefixFrom(out.addr, 32), Port: uint16(out.port)}}
	// The allowlist sandbox names the outside host: its address is
	// resolved when the sandbox starts, and pinned in its /etc/hosts.
	allowByName := []sandbox.Destination{{Host: outsideName, Port: uint16(out.port)}}
	modes := []struct {
		name string
		net  sandbox.Network
	}{
		{"none", sandbox.Network{Mode: sandbox.NetworkNone}},
		{"outbound", sandbox.Network{Mode: sandbox.NetworkOutbound}},
		{"allowlist", sandbox.Network{Mode: sandbox.NetworkAllowlist, Allow: allowByName}},
		{"peer", sandbox.Network{Mode: sandbox.NetworkOutbound}},
	}
	agents := make([]*agent, len(modes))
	var wg sync.WaitGroup
	for i, m := range modes {
		wg.Go(func() {
			agents[i] = s.startFatal(t, d, m.name, func(sp *sandbox.Spec) { sp.Network = m.net })
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, a := range agents {
		a.waitReady(t)
	}
	none, outbound, allowlist, peer := agents[0], agents[1], agents[2], agents[3]
	peerGW, peerAddr := sandboxAddrs(t, cfg.Link(state, peer.sb.ID()))

	// What no sandbox may reach, whatever its mode.
	type target struct{ attack, addr string }
	forbidden := []target{
		{"connect to another sandbox's agent", net.JoinHostPort(peerAddr.String(), "8080")},
		{"connect to another sandbox's gateway (the host)", net.JoinHostPort(peerGW.String(), strconv.Itoa(apiPort))},
	}
	for _, a := range hostAddrs(t) {
		forbidden = append(forbidden, target{"connect to Berth's API on a host address", net.JoinHostPort(a.String(), strconv.Itoa(apiPort))})
	}
	rep := &report{}
	defer rep.log(t)
	unreachable := func(t *testing.T, a *agent, targets ...target) {
		t.Helper()
		at := attacker{t: t, a: a, r: rep}
		mode := strings.TrimPrefix(a.sb.ID(), s.id(""))
		for _, tg := range targets {
			at.unreachable(mode+": "+tg.attack+" "+tg.addr, tg.addr)
		}
	}
	outsideAt := func(a netip.Addr, port int) string { return net.JoinHostPort(a.String(), strconv.Itoa(port)) }

	t.Run("None", func(t *testing.T) {
		if code, body := none.get(t, "/ifaces"); code != http.StatusOK || body != "lo" {
			t.Errorf("interfaces: %d %q, want lo only", code, body)
		}
		unreachable(t, none, target{"connect to the outside host", outsideAt(out.addr, out.port)})
		unreachable(t, none, forbidden...)
	})
	t.Run("Outbound", func(t *testing.T) {
		_, self := sandboxAddrs(t, cfg.Link(state, outbound.sb.ID()))
		body := outbound.ok(t, "/get", "url", out.url(out.addr, out.port))
		if body != out.host.String() {
			t.Errorf("the outside host saw the sandbox as %q, want the host's address %s (sandbox: %s)", body, out.host, self)
		}
		outbound.ok(t, "/get", "url", out.url(out.other, out.port2))
		unreachable(t, outbound, forbidden...)
		unreachable(t, outbound, target{"connect to the metadata service", "169.254.169.254:80"})
		at := attacker{t: t, a: outbound, r: rep}
		at.refused("outbound: take another sandbox's address on its link", "set-address", "link", "eth0", "addr", peerAddr.String())
		if data := outbound.ok(t, "/read", "path", "/etc/resolv.conf"); !strings.Contains(data, "Berth") {
			t.Errorf("/etc/resolv.conf is not Berth's: %q", data)
		}
	})
	t.Run("Allowlist", func(t *testing.T) {
		byName := "http://" + net.JoinHostPort(outsideName, strconv.Itoa(out.port)) + "/"
		body := allowlist.ok(t, "/get", "url", byName)
		if body != out.host.String() {
			t.Errorf("the outside host saw the sandbox as %q, want %s", body, out.host)
		}
		if hosts := allowlist.ok(t, "/read", "path", "/etc/hosts"); !strings.Contains(hosts, out.addr.String()+"\t"+outsideName+"\n") {
			t.Errorf("/etc/hosts does not pin %s to %s: %q", outsideName, out.addr, hosts)
		}
		unreachable(t, allowlist,
			target{"connect to another address of the allowed host", outsideAt(out.other, out.port)},
			target{"connect to another port of the allowed address", outsideAt(out.addr, out.port2)})
		unreachable(t, allowlist, forbidden...)
	})
	t.Run("Peer", func(t *testing.T) {
		// The peer is reachable from nothing but Berth's dialler: not from
		// the host through its link either.
		c, err := net.DialTimeout("tcp", net.JoinHostPort(peerAddr.String(), "8080"), time.Second)
		if err == nil {
			c.Close()
			t.Errorf("the host connected to sandbox %s at %s through its link", peer.sb.ID(), peerAddr)
			rep.add("host: connect to a sandbox through its link", false, "CONNECTED")
		} else {
			rep.add("host: connect to a sandbox through its link", true, "refused: "+lastPart(err.Error()))
		}
	})
	t.Run("Namespaces", func(t *testing.T) {
		// A networked sandbox joins namespaces the driver may make
		// itself (to set the network up before the agent runs): the
		// agent must see what one without a network sees, and be as
		// unprivileged. (Under a user-space kernel the namespaces and
		// /sys the agent sees are that kernel's, whatever the host's.)
		for _, f := range []string{"/proc/self/uid_map", "/proc/self/gid_map", "/proc/self/setgroups"} {
			if cfg.UserSpaceKernel {
				break
			}
			want := none.ok(t, "/read", "path", f)
			for _, a := range []*agent{outbound, allowlist} {
				if got := a.ok(t, "/read", "path", f); got != want {
					t.Errorf("%s of %s = %q, want %q as without a network", f, a.sb.ID(), got, want)
				}
			}
		}
		for _, a := range []*agent{outbound, allowlist} {
			s.attackIdentity(t, attacker{t: t, a: a, r: rep})
			// sysfs is mounted (which needs the network namespace to
			// belong to the sandbox's user namespace) and shows the
			// sandbox's own network.
			if cfg.UserSpaceKernel {
				continue
			}
			if got := a.ok(t, "/read", "path", "/sys/class/net/eth0/mtu"); strings.TrimSpace(got) == "" {
				t.Errorf("/sys/class/net/eth0/mtu of %s is empty", a.sb.ID())
			}
		}
	})
	t.Run("SharedTable", func(t *testing.T) {
		// Every networked sandbox's filter is a chain of the one table
		// whose base chains every packet of the host goes through, not a
		// table (with base chains) of its own.
		c, err := nftables.New()
		if err != nil {
			t.Fatal(err)
		}
		tables, err := c.ListTables()
		if err != nil {
			t.Fatal(err)
		}
		chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range []*agent{outbound, allowlist, peer} {
			link := cfg.Link(state, a.sb.ID())
			if slices.ContainsFunc(tables, func(tb *nftables.Table) bool { return tb.Name == link }) {
				t.Errorf("sandbox %s has an nftables table of its own, %s", a.sb.ID(), link)
			}
			if !slices.ContainsFunc(chains, func(ch *nftables.Chain) bool {
				return ch.Table.Name == network.TableName && ch.Name == link && ch.Hooknum == nil
			}) {
				t.Errorf("sandbox %s has no chain %s in table inet %s", a.sb.ID(), link, network.TableName)
			}
		}
	})
	if t.Failed() {
		return
	}

	t.Run("Stop", func(t *testing.T) {
		link := cfg.Link(state, outbound.sb.ID())
		gw, addr := sandboxAddrs(t, link)
		paths := statePathsOf(cfg, state, outbound.sb.ID())
		if n := tracked(t, addr); n == 0 {
			t.Fatalf("no connection of %s is tracked after it made some", addr)
		}
		if err := outbound.sb.Stop(t.Context()); err != nil {
			t.Fatal(err)
		}
		assertNetworkGone(t, link, gw, addr, paths)
	})
	t.Run("CleanupAfterCrash", func(t *testing.T) {
		crashState := TempDir(t)
		crashPool := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 253, randomByte(), 0}), 24)
		if crashPool == pool {
			crashPool = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 253, pool.Addr().As4()[2] + 1, 0}), 24)
		}
		old := cfg.NewDriver(t, crashState, NetworkHost{Pool: crashPool})
		x := s.startFatal(t, old, "crash", func(sp *sandbox.Spec) { sp.Network = sandbox.Network{Mode: sandbox.NetworkAllowlist, Allow: allow} })
		if x == nil {
			t.FailNow()
		}
		x.waitReady(t)
		x.ok(t, "/get", "url", out.url(out.addr, out.port))
		link := cfg.Link(crashState, x.sb.ID())
		gw, addr := sandboxAddrs(t, link)
		paths := statePathsOf(cfg, crashState, x.sb.ID())
		// The old driver is dropped without Stop, as if Berth had crashed.
		d := cfg.NewDriver(t, crashState, NetworkHost{Pool: crashPool})
		if err := d.Cleanup(t.Context()); err != nil {
			t.Fatalf("Cleanup: %v", err)
		}
		assertNetworkGone(t, link, gw, addr, paths)
		for _, a := range hostAddrs(t) {
			if crashPool.Contains(a) {
				t.Errorf("host address %s of the crashed driver's pool %s is left", a, crashPool)
			}
		}
	})
}

// statePathsOf returns cfg's state paths of sandbox id, if it has any.
func statePathsOf(cfg NetworkConfig, state, id string) []string {
	if cfg.StatePaths == nil {
		return nil
	}
	return cfg.StatePaths(state, id)
}

// assertNetworkGone checks that nothing of the sandbox whose host link was
// link is left: the link, its filter (nftables chain and set elements), its
// gateway address on the host, the tracked connections of its address addr,
// and the given paths.
func assertNetworkGone(t *testing.T, link string, gw, addr netip.Addr, paths []string) {
	t.Helper()
	left, err := network.Exists(link)
	if err != nil {
		t.Fatal(err)
	}
	if left {
		t.Errorf("the link or nftables filter %s is left", link)
	}
	for _, a := range hostAddrs(t) {
		if a == gw {
			t.Errorf("the sandbox's gateway address %s is left on the host", a)
		}
	}
	if n := tracked(t, addr); n > 0 {
		t.Errorf("%d connections of the sandbox's address %s are still tracked", n, addr)
	}
	for _, p := range paths {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is left (%v)", p, err)
		}
	}
}

// memoryResolver returns a resolver that answers A queries for names from
// memory, through a pipe to a name server in this process.
func memoryResolver(names map[string]netip.Addr) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		client, server := net.Pipe()
		go serveDNS(server, names)
		return client, nil
	}}
}

// serveDNS answers DNS queries on c, framed as over TCP (a pipe is not a
// packet connection, so Go's resolver frames them so), until c closes.
func serveDNS(c net.Conn, names map[string]netip.Addr) {
	defer c.Close()
	for {
		var size [2]byte
		if _, err := io.ReadFull(c, size[:]); err != nil {
			return
		}
		msg := make([]byte, binary.BigEndian.Uint16(size[:]))
		if _, err := io.ReadFull(c, msg); err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(msg)
		if err != nil {
			return
		}
		q, err := p.Question()
		if err != nil {
			return
		}
		resp := dnsmessage.Message{
			Header:    dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionAvailable: true},
			Questions: []dnsmessage.Question{q},
		}
		a, known := names[strings.TrimSuffix(q.Name.String(), ".")]
		switch {
		case !known:
			resp.RCode = dnsmessage.RCodeNameError
		case q.Type == dnsmessage.TypeA:
			resp.Answers = []dnsmessage.Resource{{
				Header: dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60},
				Body:   &dnsmessage.AResource{A: a.As4()},
			}}
		}
		out, err := resp.Pack()
		if err != nil {
			return
		}
		if _, err := c.Write(binary.BigEndian.AppendUint16(nil, uint16(len(out)))); err != nil {
			return
		}
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// tracked counts the connection tracking entries whose original source is
// addr.
func tracked(t *testing.T, addr netip.Addr) int {
	t.Helper()
	flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
	if err != nil {
		t.Fatalf("list tracked connections: %v", err)
	}
	n := 0
	for _, f := range flows {
		if src, ok := netip.AddrFromSlice(f.Forward.SrcIP.To4()); ok && src == addr {
			n++
		}
	}
	return n
}

// newOutside makes the outside host, removed when the test ends.
func newOutside(t *testing.T) *outside {
	t.Helper()
	third := randomByte()
	subnet := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 254, third, 0}), 24)
	checkUnrouted(t, subnet)
	o := &outside{
		host:  netip.AddrFrom4([4]byte{10, 254, third, 1}),
		addr:  netip.AddrFrom4([4]byte{10, 254, third, 2}),
		other: netip.AddrFrom4([4]byte{10, 254, third, 3}),
	}
	link := "btout" + randomHex(4)
	type made struct {
		ls  []net.Listener
		err error
	}
	ch := make(chan made, 1)
	go func() {
		// The thread enters the outside namespace and is retired with
		// the goroutine; the namespace lives on in its sockets.
		runtime.LockOSThread()
		ls, err := o.build(link, subnet)
		ch <- made{ls, err}
	}()
	m := <-ch
	t.Cleanup(func() {
		for _, l := range m.ls {
			l.Close()
		}
		if l, err := netlink.LinkByName(link); err == nil {
			netlink.LinkDel(l)
		}
	})
	if m.err != nil {
		t.Fatalf("make the outside host: %v", m.err)
	}
	o.port = m.ls[0].Addr().(*net.TCPAddr).Port
	o.port2 = m.ls[1].Addr().(*net.TCPAddr).Port
	for _, l := range m.ls {
		go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			host, _, _ := net.SplitHostPort(r.RemoteAddr)
			io.WriteString(w, host)
		}))
	}
	return o
}

// build runs on a locked thread: it moves the thread to a new network
// namespace, links it to the host and listens there.
func (o *outside) build(link string, subnet netip.Prefix) ([]net.Listener, error) {
	host, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer host.Close()
	hh, err := netlink.NewHandleAt(host)
	if err != nil {
		return nil, err
	}
	defer hh.Close()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return nil, fmt.Errorf("new network namespace: %w", err)
	}
	ns, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	oh, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, err
	}
	defer oh.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = link
	if err := hh.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "out0", PeerNamespace: netlink.NsFd(int(ns))}); err != nil {
		return nil, fmt.Errorf("veth: %w", err)
	}
	mask := net.CIDRMask(subnet.Bits(), 32)
	hl, err := hh.LinkByName(link)
	if err != nil {
		return nil, err
	}
	if err := hh.AddrAdd(hl, &netlink.Addr{IPNet: &net.IPNet{IP: o.host.AsSlice(), Mask: mask}}); err != nil {
		return nil, err
	}
	if err := hh.LinkSetUp(hl); err != nil {
		return nil, err
	}
	ol, err := oh.LinkByName("out0")
	if err != nil {
		return nil, err
	}
	for _, a := range []netip.Addr{o.addr, o.other} {
		if err := oh.AddrAdd(ol, &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: mask}}); err != nil {
			return nil, err
		}
	}
	for _, l := range []netlink.Link{ol} {
		if err := oh.LinkSetUp(l); err != nil {
			return nil, err
		}
	}
	if lo, err := oh.LinkByName("lo"); err == nil {
		oh.LinkSetUp(lo)
	}
	var ls []net.Listener
	for range 2 {
		l, err := net.Listen("tcp4", "0.0.0.0:0")
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return nil, err
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// sandboxAddrs returns the gateway (the host end's address) and the address
// of the sandbox whose host link is link.
func sandboxAddrs(t *testing.T, link string) (gw, addr netip.Addr) {
	t.Helper()
	l, err := netlink.LinkByName(link)
	if err != nil {
		t.Fatalf("find the sandbox's link %s: %v", link, err)
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 {
		t.Fatalf("addresses of %s: %v %v, want one", link, addrs, err)
	}
	gw, _ = netip.AddrFromSlice(addrs[0].IP.To4())
	return gw, gw.Next()
}

// hostAddrs returns the host's IPv4 addresses, but loopback.
func hostAddrs(t *testing.T) []netip.Addr {
	t.Helper()
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if ok && !ip.IsLoopback() {
			out = append(out, ip)
		}
	}
	return out
}

// checkUnrouted fails the test if the host already routes to p: the test's
// addresses must be its own.
func checkUnrouted(t *testing.T, p netip.Prefix) {
	t.Helper()
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		dst, _ := netip.AddrFromSlice(r.Dst.IP.To4())
		ones, _ := r.Dst.Mask.Size()
		if ones == 0 {
			continue // the default route
		}
		if netip.PrefixFrom(dst, ones).Overlaps(p) {
			t.Fatalf("the host already routes %s (to %s): the test needs it free", p, r.Dst)
		}
	}
}

// acceptAndClose accepts connections on l and closes them at once, until l
// is closed.
func acceptAndClose(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// randomByte returns a random byte from 1 to 254.
func randomByte() byte {
	var b [1]byte
	for b[0] == 0 || b[0] == 255 {
		rand.Read(b[:])
	}
	return b[0]
}
