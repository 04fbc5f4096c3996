package network

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/berthrun/berth/internal/sandbox"
)

// BenchmarkHostLoopback measures what the sandboxes' filter costs every
// packet of the host that is not a sandbox's: a TCP request and response
// (one byte each way) over loopback, as Berth's own API gets, and a TCP
// connection set up and torn down, with the rules of 0 and of 500
// sandboxes installed. The rules are those of outbound sandboxes on links
// that do not exist: nftables matches interface names, so the cost per
// packet is the same as with live sandboxes.
func BenchmarkHostLoopback(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("installing sandbox rules needs root (nftables)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	for _, n := range []int{0, 500} {
		installRules(b, n)
		b.Run(fmt.Sprintf("sandboxes=%d/roundtrip", n), func(b *testing.B) {
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			buf := []byte{1}
			for b.Loop() {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("sandboxes=%d/connect", n), func(b *testing.B) {
			buf := []byte{1}
			for b.Loop() {
				c, err := net.Dial("tcp", l.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

// benchPool is where the benchmark's sandboxes take their addresses from:
// nothing is routed there, as their links do not exist.
var benchPool = netip.MustParsePrefix("10.252.0.0/16")

// installRules installs the filter of n outbound sandboxes on links that do
// not exist, and removes it when tb ends.
func installRules(tb testing.TB, n int) {
	tb.Helper()
	if err := ensureTable(); err != nil {
		tb.Fatal(err)
	}
	base := benchPool.Addr().As4()
	for i := range n {
		a := &Attachment{Link: LinkName(fmt.Sprintf("%s/bench/%d/%d", tb.Name(), os.Getpid(), i)), mode: sandbox.NetworkOutbound}
		v := uint32(i)*4 + 2
		a.Addr = netip.AddrFrom4([4]byte{base[0], base[1] + byte(v>>16), byte(v >> 8), byte(v)})
		if err := addSandbox(a, sandbox.NetworkOutbound, benchPool); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() {
			if err := Remove(a.Link, netip.Addr{}); err != nil {
				tb.Error(err)
			}
		})
	}
}
