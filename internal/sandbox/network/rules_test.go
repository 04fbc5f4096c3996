package network

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/berthrun/berth/internal/sandbox"
)

// inNetns runs fn on a thread in network namespace ns: netlink and nftables
// sockets opened there belong to it.
func inNetns(tb testing.TB, ns netns.NsHandle, fn func()) {
	tb.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The thread is left locked, so that it dies with the goroutine
		// rather than serve others in ns.
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			tb.Errorf("enter the test's network namespace: %v", err)
			return
		}
		fn()
	}()
	<-done
	if tb.Failed() {
		tb.FailNow()
	}
}

// newTestNetns makes a network namespace for the test, so that its tables
// are the test's alone.
func newTestNetns(t *testing.T) netns.NsHandle {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces and nftables)")
	}
	var ns netns.NsHandle
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		// netns.New moves the thread into the new namespace: the thread
		// stays locked, and dies with the goroutine.
		runtime.LockOSThread()
		ns, err = netns.New()
	}()
	<-done
	if err != nil {
		t.Fatalf("create a network namespace: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// tableState is what the test sees of the table: the rule count of each
// chain and the elements of the set and the map.
type tableState struct {
	tables []string
	rules  map[string]int
	links  []string
	from   []string
}

func readTable() (tableState, error) {
	st := tableState{rules: map[string]int{}}
	c, err := nftables.New()
	if err != nil {
		return st, err
	}
	tables, err := c.ListTables()
	if err != nil {
		return st, err
	}
	for _, tb := range tables {
		st.tables = append(st.tables, tb.Name)
	}
	slices.Sort(st.tables)
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return st, err
	}
	for _, ch := range chains {
		if ch.Table.Name != TableName {
			continue
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return st, err
		}
		st.rules[ch.Name] = len(rules)
	}
	for _, s := range []struct {
		set *nftables.Set
		out *[]string
	}{{links(table()), &st.links}, {from(table()), &st.from}} {
		if !slices.Contains(st.tables, TableName) {
			break
		}
		elems, err := c.GetSetElements(s.set)
		if err != nil {
			return st, err
		}
		for _, e := range elems {
			*s.out = append(*s.out, string(e.Key[:len(LinkName(""))]))
		}
		slices.Sort(*s.out)
	}
	return st, nil
}

// TestTable checks the shared table in a network namespace of the test's:
// making it is idempotent and keeps the sandboxes' filters; concurrent
// adds and removes of sandboxes each land whole; Remove and Prune remove a
// sandbox's chain and elements and nothing else; another table is never
// touched.
func TestTable(t *testing.T) {
	ns := newTestNetns(t)
	pool := netip.MustParsePrefix("10.252.0.0/24")
	const n = 16
	names := make([]string, n)
	for i := range names {
		names[i] = LinkName(fmt.Sprintf("%s/%d", t.Name(), i))
	}
	sorted := slices.Sorted(slices.Values(names))

	inNetns(t, ns, func() {
		// A table of someone else's, which Berth must leave alone.
		c, err := nftables.New()
		if err != nil {
			t.Error(err)
			return
		}
		other := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "other"})
		c.AddChain(&nftables.Chain{Name: "c", Table: other})
		if err := c.Flush(); err != nil {
			t.Error(err)
			return
		}
		// A Manager makes the table only for its first sandbox network:
		// a Berth without any adds nothing to the host's packets' path.
		if _, err := New(Options{Pool: pool, DNS: []netip.Addr{}, LockFile: filepath.Join(t.TempDir(), "lock")}); err != nil {
			t.Error(err)
			return
		}
		if st, err := readTable(); err != nil || !slices.Equal(st.tables, []string{"other"}) {
			t.Errorf("tables after New = %v (%v), want the test's own only", st.tables, err)
			return
		}
		if err := ensureTable(); err != nil {
			t.Error(err)
			return
		}
	})
	var base tableState
	inNetns(t, ns, func() {
		var err error
		if base, err = readTable(); err != nil {
			t.Error(err)
		}
	})
	if !slices.Equal(base.tables, []string{TableName, "other"}) {
		t.Errorf("tables = %v, want %s and the test's own", base.tables, TableName)
		return
	}
	for _, ch := range []string{"input", "output", "forward", "postrouting"} {
		if base.rules[ch] == 0 {
			t.Errorf("base chain %s has no rules (chains: %v)", ch, base.rules)
		}
	}

	// Sandboxes come and go concurrently, each in a transaction of its own.
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			inNetns(t, ns, func() {
				a := &Attachment{Link: name, Addr: netip.AddrFrom4([4]byte{10, 252, 0, byte(4*i + 2)})}
				mode := sandbox.NetworkOutbound
				if i%2 == 1 {
					mode = sandbox.NetworkAllowlist
					a.Allowed = []Rule{{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Port: 443}}
				}
				if err := addSandbox(a, mode, pool); err != nil {
					t.Error(err)
				}
			})
		})
	}
	wg.Wait()
	var full tableState
	inNetns(t, ns, func() {
		// Making the table again (as a new Berth process does) keeps the
		// sandboxes and does not add base rules twice.
		if err := ensureTable(); err != nil {
			t.Error(err)
		}
		var err error
		if full, err = readTable(); err != nil {
			t.Error(err)
		}
	})
	if !slices.Equal(full.links, sorted) || !slices.Equal(full.from, sorted) {
		t.Errorf("set %v, map %v: want every sandbox's link, %v", full.links, full.from, sorted)
		return
	}
	for i, name := range names {
		want := 7 // source checks, pool refusal, link-local refusal, accept
		if i%2 == 1 {
			want = 8 // source checks, pool refusal, TCP and UDP to the port, refusal
		}
		if full.rules[name] != want {
			t.Errorf("chain %s has %d rules, want %d", name, full.rules[name], want)
		}
	}
	for ch, n := range base.rules {
		if full.rules[ch] != n {
			t.Errorf("base chain %s has %d rules after making the table again, want %d", ch, full.rules[ch], n)
		}
	}

	// A sandbox of an older Berth had a table of its own: Remove deletes
	// it too.
	inNetns(t, ns, func() {
		c, err := nftables.New()
		if err != nil {
			t.Error(err)
			return
		}
		legacy := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: names[0]})
		c.AddChain(&nftables.Chain{Name: "input", Table: legacy, Hooknum: nftables.ChainHookInput,
			Type: nftables.ChainTypeFilter, Priority: nftables.ChainPriorityFilter})
		if err := c.Flush(); err != nil {
			t.Error(err)
			return
		}
	})
	// Half are removed concurrently (each twice, as a Stop racing a
	// Cleanup would); the rest are left by a "crash".
	for _, name := range names[:n/2] {
		for range 2 {
			wg.Go(func() {
				inNetns(t, ns, func() {
					if err := Remove(name, netip.Addr{}); err != nil {
						t.Error(err)
					}
				})
			})
		}
	}
	wg.Wait()
	var pruned []string
	inNetns(t, ns, func() {
		st, err := readTable()
		if err != nil {
			t.Error(err)
			return
		}
		if want := slices.Sorted(slices.Values(names[n/2:])); !slices.Equal(st.links, want) || !slices.Equal(st.from, want) {
			t.Errorf("after Remove: set %v, map %v, want %v", st.links, st.from, want)
		}
		for _, name := range names[:n/2] {
			if _, ok := st.rules[name]; ok {
				t.Errorf("chain %s is left after Remove", name)
			}
			if left, err := Exists(name); err != nil || left {
				t.Errorf("Exists(%s) after Remove = %v, %v", name, left, err)
			}
		}
		// One sandbox still has its link: Prune keeps its filter.
		live := names[n-1]
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: live}, PeerName: "peer"}); err != nil {
			t.Error(err)
			return
		}
		if pruned, err = Prune(); err != nil {
			t.Error(err)
		}
		if st, err = readTable(); err != nil {
			t.Error(err)
			return
		}
		if !slices.Equal(st.links, []string{live}) || !slices.Equal(st.from, []string{live}) || st.rules[live] == 0 {
			t.Errorf("after Prune: set %v, map %v, chains %v: want only %s", st.links, st.from, st.rules, live)
		}
		if !slices.Equal(st.tables, []string{TableName, "other"}) {
			t.Errorf("tables = %v", st.tables)
		}
		for ch, n := range base.rules {
			if st.rules[ch] != n {
				t.Errorf("base chain %s has %d rules, want %d", ch, st.rules[ch], n)
			}
		}
		c, err := nftables.New()
		if err != nil {
			t.Error(err)
			return
		}
		if chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet); err != nil {
			t.Error(err)
		} else if !slices.ContainsFunc(chains, func(ch *nftables.Chain) bool { return ch.Table.Name == "other" && ch.Name == "c" }) {
			t.Errorf("the other table's chain is gone")
		}
	})
	if want := slices.Sorted(slices.Values(names[n/2 : n-1])); !slices.Equal(slices.Sorted(slices.Values(pruned)), want) {
		t.Errorf("Prune pruned %v, want %v", pruned, want)
	}
}
