package cli

import (
	"net"
	"testing"
)

func TestPickConsolePort(t *testing.T) {
	// A port in use, and the one after it in use too.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	agent := busy.Addr().(*net.TCPAddr).Port
	free := func() int {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).Port
	}

	next := free()
	for _, tt := range []struct {
		name         string
		asked, agent int
		want         int // 0: any port but the agent's and notWant
		notWant      int
		usage        bool
	}{
		{name: "asked", asked: 9123, agent: 8080, want: 9123},
		{name: "asked the agent's", asked: 8080, agent: 8080, usage: true},
		{name: "not a port", asked: 70000, agent: 8080, usage: true},
		{name: "negative", asked: -1, agent: 8080, usage: true},
		{name: "next is free", agent: next - 1, want: next},
		{name: "next is in use", agent: agent - 1, notWant: agent},
		{name: "last port", agent: 65535},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pickConsolePort(tt.asked, tt.agent)
			if tt.usage {
				if ExitCode(err) != ExitUsage {
					t.Fatalf("pickConsolePort(%d, %d) = %d, %v; want a usage error", tt.asked, tt.agent, got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (tt.want != 0 && got != tt.want) || got == tt.notWant || got == tt.agent || got < 1 || got > 65535 {
				t.Errorf("pickConsolePort(%d, %d) = %d, want %d (not %d)", tt.asked, tt.agent, got, tt.want, tt.notWant)
			}
		})
	}
}
