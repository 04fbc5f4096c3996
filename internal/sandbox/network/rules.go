package network

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/sandbox"
)

// linkLocal is where clouds serve instance metadata (and credentials):
// never reachable from an outbound sandbox unless allowlisted.
var linkLocal = netip.MustParsePrefix("169.254.0.0/16")

// TableName is the nftables table (family inet) that holds the filter of
// every sandbox of the host.
const TableName = "berth"

// The sets of the table: linksSet holds the host link of every sandbox,
// fromMap maps each to a jump to the sandbox's own chain (named as its
// link).
const (
	linksSet = "links"
	fromMap  = "from"
)

func table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}
}

func links(t *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: t, Name: linksSet, KeyType: nftables.TypeIFName}
}

func from(t *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: t, Name: fromMap, IsMap: true, KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict}
}

// ruleset accumulates the rules of one transaction.
type ruleset struct {
	c *nftables.Conn
	t *nftables.Table
}

// rule appends a rule made of exprs to ch.
func (r ruleset) rule(ch *nftables.Chain, exprs ...[]expr.Any) {
	var all []expr.Any
	for _, e := range exprs {
		all = append(all, e...)
	}
	r.c.AddRule(&nftables.Rule{Table: r.t, Chain: ch, Exprs: all})
}

// refuse rejects what matches: TCP with a reset, the rest with an ICMP
// error (which the kernel rate-limits), so that the sandbox's attempt fails
// at once rather than timing out.
func (r ruleset) refuse(ch *nftables.Chain, match ...[]expr.Any) {
	r.rule(ch, append(match, isTCP(), rejectTCP())...)
	r.rule(ch, append(match, rejectICMP())...)
}

// ensureTable makes the table, its sets and its base chains exist with the
// rules this version of Berth gives them, in one transaction. The base
// chains are flushed and filled again in that same transaction, so it can
// run at any time, from several processes at once, without a packet ever
// seeing them half-made, and the sandboxes' elements and chains stay.
//
// Every packet of the host goes through the base chains, so they cost the
// same whatever the number of sandboxes: a hash lookup of the interface
// name in a set, and for packets a sandbox sends, a jump through a verdict
// map to that sandbox's chain.
func ensureTable() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := c.AddTable(table())
	ls, fm := links(t), from(t)
	if err := c.AddSet(ls, nil); err != nil {
		return fmt.Errorf("nftables: set %s: %w", linksSet, err)
	}
	if err := c.AddSet(fm, nil); err != nil {
		return fmt.Errorf("nftables: map %s: %w", fromMap, err)
	}
	accept := nftables.ChainPolicyAccept
	chain := func(name string, hook *nftables.ChainHook, typ nftables.ChainType, prio *nftables.ChainPriority) *nftables.Chain {
		ch := c.AddChain(&nftables.Chain{Name: name, Table: t, Hooknum: hook, Type: typ, Priority: prio, Policy: &accept})
		c.FlushChain(ch)
		return ch
	}
	r := ruleset{c: c, t: t}
	in, out := iifIn(ls), oifIn(ls)

	// Nothing from a sandbox reaches the host itself.
	input := chain("input", nftables.ChainHookInput, nftables.ChainTypeFilter, nftables.ChainPriorityFilter)
	r.refuse(input, in)

	// Nothing of the host opens a connection to a sandbox.
	output := chain("output", nftables.ChainHookOutput, nftables.ChainTypeFilter, nftables.ChainPriorityFilter)
	r.rule(output, out, replies(), verdict(expr.VerdictAccept))
	r.refuse(output, out)

	fwd := chain("forward", nftables.ChainHookForward, nftables.ChainTypeFilter, nftables.ChainPriorityFilter)
	// Towards a sandbox: replies only, so neither another sandbox nor
	// anything outside opens a connection to it.
	r.rule(fwd, out, replies(), verdict(expr.VerdictAccept))
	r.refuse(fwd, out)
	// From a sandbox: its own chain decides, and has the last word.
	r.rule(fwd, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: fm.Name, SetID: fm.ID, DestRegister: 0, IsDestRegSet: true},
	})
	// A link in the set but not in the map does not happen (both change in
	// one transaction); were it to, refuse.
	r.refuse(fwd, in)

	nat := chain("postrouting", nftables.ChainHookPostrouting, nftables.ChainTypeNAT, nftables.ChainPriorityNATSource)
	r.rule(nat, in, []expr.Any{&expr.Masq{}})

	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: set up table inet %s: %w", TableName, err)
	}
	return nil
}

// addSandbox adds the filter of sandbox a to the table, in one transaction:
// its chain, which its packets jump to, and its link in the set and the map.
// If the table is missing (someone deleted it), it makes it again first.
func addSandbox(a *Attachment, mode sandbox.NetworkMode, pool netip.Prefix) error {
	err := addSandboxOnce(a, mode, pool)
	if errors.Is(err, unix.ENOENT) {
		if err := ensureTable(); err != nil {
			return err
		}
		err = addSandboxOnce(a, mode, pool)
	}
	return err
}

func addSandboxOnce(a *Attachment, mode sandbox.NetworkMode, pool netip.Prefix) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := table()
	r := ruleset{c: c, t: t}
	ch := c.AddChain(&nftables.Chain{Name: a.Link, Table: t})
	// From the sandbox: IPv4 from its own address only.
	r.rule(ch, notIPv4(), verdict(expr.VerdictDrop))
	r.rule(ch, saddrNot(a.Addr), verdict(expr.VerdictDrop))
	// Never another sandbox.
	r.refuse(ch, daddrIn(pool))
	switch mode {
	case sandbox.NetworkOutbound:
		r.refuse(ch, daddrIn(linkLocal))
		r.rule(ch, verdict(expr.VerdictAccept))
	case sandbox.NetworkAllowlist:
		for _, rl := range a.Allowed {
			if rl.Port == 0 {
				r.rule(ch, daddrIn(rl.Prefix), verdict(expr.VerdictAccept))
				continue
			}
			for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
				r.rule(ch, daddrIn(rl.Prefix), dport(proto, rl.Port), verdict(expr.VerdictAccept))
			}
		}
		r.refuse(ch)
	default:
		return fmt.Errorf("network mode %q has no filter", mode)
	}
	key := ifname(a.Link)
	if err := c.SetAddElements(from(t), []nftables.SetElement{{Key: key, VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: a.Link}}}); err != nil {
		return fmt.Errorf("nftables: add %s to map %s: %w", a.Link, fromMap, err)
	}
	if err := c.SetAddElements(links(t), []nftables.SetElement{{Key: key}}); err != nil {
		return fmt.Errorf("nftables: add %s to set %s: %w", a.Link, linksSet, err)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: add sandbox %s to table inet %s: %w", a.Link, TableName, err)
	}
	return nil
}

// deleteSandbox removes the filter of the sandbox whose link is link, in
// one transaction, if it is there: addSandbox adds all of it at once, so it
// is there whole or not at all.
func deleteSandbox(link string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := table()
	key := []nftables.SetElement{{Key: ifname(link)}}
	// The set first: from then on the base chains refuse what the link
	// carries, until the link goes.
	if err := c.SetDeleteElements(links(t), key); err != nil {
		return fmt.Errorf("nftables: delete %s from set %s: %w", link, linksSet, err)
	}
	if err := c.SetDeleteElements(from(t), key); err != nil {
		return fmt.Errorf("nftables: delete %s from map %s: %w", link, fromMap, err)
	}
	c.DelChain(&nftables.Chain{Name: link, Table: t})
	if err := c.Flush(); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil // not there (or the whole table is not)
		}
		return fmt.Errorf("nftables: delete sandbox %s from table inet %s: %w", link, TableName, err)
	}
	return nil
}

// probeNFTables creates and deletes an empty table, to learn early whether
// the kernel has nf_tables and this process may use it, without adding
// anything to the host's packets' path.
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

// deleteLegacyTable deletes the table named link, if it exists: Berth
// versions before the shared table gave each sandbox a table of its own,
// named as its link, and one may be left by a sandbox of such a version.
func deleteLegacyTable(link string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	if _, err := c.ListTableOfFamily(link, nftables.TableFamilyINet); err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("nftables: find table %s: %w", link, err)
	}
	c.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: link})
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("nftables: delete table %s: %w", link, err)
	}
	return nil
}

// hasSandbox reports whether any of link's filter is on the host: its
// chain or its element in the set or the map, or a table of its own (see
// deleteLegacyTable).
func hasSandbox(link string) (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, err
	}
	if slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == link }) {
		return true, nil
	}
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == TableName }) {
		return false, nil
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, err
	}
	if slices.ContainsFunc(chains, func(ch *nftables.Chain) bool { return ch.Table.Name == TableName && ch.Name == link }) {
		return true, nil
	}
	t := table()
	key := ifname(link)
	for _, s := range []*nftables.Set{links(t), from(t)} {
		elems, err := c.GetSetElements(s)
		if err != nil {
			return false, fmt.Errorf("list set %s: %w", s.Name, err)
		}
		if slices.ContainsFunc(elems, func(e nftables.SetElement) bool { return string(e.Key) == string(key) }) {
			return true, nil
		}
	}
	return false, nil
}

// ifname is an interface name as nftables compares it: NUL-padded.
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

// iifIn matches packets that came in on a link of set s.
func iifIn(s *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
	}
}

// oifIn matches packets that go out on a link of set s.
func oifIn(s *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
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
