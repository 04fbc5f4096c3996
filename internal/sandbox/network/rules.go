package network

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/sandbox"
)

// linkLocal is where clouds serve instance metadata (and credentials):
// never reachable from an outbound sandbox unless allowlisted.
var linkLocal = netip.MustParsePrefix("169.254.0.0/16")

// addTable creates the sandbox's nftables table (see the package
// documentation) in one transaction.
func addTable(a *Attachment, mode sandbox.NetworkMode, pool netip.Prefix) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: a.Link})
	accept := nftables.ChainPolicyAccept
	chain := func(name string, hook *nftables.ChainHook, typ nftables.ChainType, prio *nftables.ChainPriority) *nftables.Chain {
		return c.AddChain(&nftables.Chain{Name: name, Table: t, Hooknum: hook, Type: typ, Priority: prio, Policy: &accept})
	}
	rule := func(ch *nftables.Chain, exprs ...[]expr.Any) {
		var all []expr.Any
		for _, e := range exprs {
			all = append(all, e...)
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: all})
	}
	// refuse rejects what matches: TCP with a reset, the rest with an
	// ICMP error (which the kernel rate-limits), so that the sandbox's
	// attempt fails at once rather than timing out.
	refuse := func(ch *nftables.Chain, match ...[]expr.Any) {
		rule(ch, append(match, isTCP(), rejectTCP())...)
		rule(ch, append(match, rejectICMP())...)
	}
	in, out := iif(a.Link), oif(a.Link)

	// Nothing from the sandbox reaches the host itself.
	input := chain("input", nftables.ChainHookInput, nftables.ChainTypeFilter, nftables.ChainPriorityFilter)
	refuse(input, in)

	// Nothing of the host opens a connection to the sandbox.
	output := chain("output", nftables.ChainHookOutput, nftables.ChainTypeFilter, nftables.ChainPriorityFilter)
	rule(output, out, replies(), verdict(expr.VerdictAccept))
	refuse(output, out)

	fwd := chain("forward", nftables.ChainHookForward, nftables.ChainTypeFilter, nftables.ChainPriorityFilter)
	// Towards the sandbox: replies only, so neither another sandbox nor
	// anything outside opens a connection to it.
	rule(fwd, out, replies(), verdict(expr.VerdictAccept))
	refuse(fwd, out)
	// From the sandbox: IPv4 from its own address only.
	rule(fwd, in, notIPv4(), verdict(expr.VerdictDrop))
	rule(fwd, in, saddrNot(a.Addr), verdict(expr.VerdictDrop))
	// Never another sandbox.
	refuse(fwd, in, daddrIn(pool))
	switch mode {
	case sandbox.NetworkOutbound:
		refuse(fwd, in, daddrIn(linkLocal))
		rule(fwd, in, verdict(expr.VerdictAccept))
	case sandbox.NetworkAllowlist:
		for _, r := range a.Allowed {
			if r.Port == 0 {
				rule(fwd, in, daddrIn(r.Prefix), verdict(expr.VerdictAccept))
				continue
			}
			for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
				rule(fwd, in, daddrIn(r.Prefix), dport(proto, r.Port), verdict(expr.VerdictAccept))
			}
		}
		refuse(fwd, in)
	default:
		return fmt.Errorf("network mode %q has no filter", mode)
	}

	nat := chain("postrouting", nftables.ChainHookPostrouting, nftables.ChainTypeNAT, nftables.ChainPriorityNATSource)
	rule(nat, in, []expr.Any{&expr.Masq{}})

	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: add table %s: %w", a.Link, err)
	}
	return nil
}

// deleteTable deletes the sandbox's table, if it exists.
func deleteTable(name string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	if _, err := c.ListTableOfFamily(name, nftables.TableFamilyINet); err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("nftables: find table %s: %w", name, err)
	}
	c.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: name})
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("nftables: delete table %s: %w", name, err)
	}
	return nil
}

// probeNFTables creates and deletes an empty table, to learn early whether
// the kernel has nf_tables and this process may use it.
func probeNFTables() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	var b [4]byte
	rand.Read(b[:])
	name := fmt.Sprintf("%sprobe%d-%x", LinkPrefix, os.Getpid(), b)
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: name})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("create table: %w", err)
	}
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete table %s: %w", name, err)
	}
	return nil
}

// ifname is an interface name as nftables compares it: NUL-padded.
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

func iif(name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(name)},
	}
}

func oif(name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(name)},
	}
}

// replies matches packets of connections already established (or related
// to one, as ICMP errors are).
func replies() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

func notIPv4() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
	}
}

// saddrNot matches IPv4 packets whose source is not a. Only IPv4 reaches it
// (notIPv4 drops the rest first).
func saddrNot(a netip.Addr) []expr.Any {
	b := a.As4()
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: b[:]},
	}
}

// daddrIn matches IPv4 packets whose destination is in p.
func daddrIn(p netip.Prefix) []expr.Any {
	addr := p.Masked().Addr().As4()
	mask := [4]byte{}
	for i := range p.Bits() {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask[:], Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr[:]},
	}
}

// dport matches packets of protocol proto (TCP or UDP) to port.
func dport(proto byte, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

func isTCP() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}
}

// rejectTCP refuses a TCP packet with a reset.
func rejectTCP() []expr.Any {
	return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}}
}

// rejectICMP refuses a packet with an ICMP "administratively prohibited".
func rejectICMP() []expr.Any {
	return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED}}
}

func verdict(k expr.VerdictKind) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: k}}
}
