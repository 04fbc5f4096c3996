package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestSSEPrinting(t *testing.T) {
	for _, c := range []struct {
		name, in         string
		wantOut, wantErr string
		agentErr         bool
	}{
		{name: "text pieces", in: "data: \"You\"\n\ndata: \" said\"\n\ndata: \" hi\"\n\n", wantOut: "You said hi\n"},
		{name: "no final blank line", in: "data: \"a\"\n\ndata: \"b\"", wantOut: "ab\n"},
		{name: "CRLF", in: "data: \"a\"\r\n\r\ndata: \"b\"\r\n\r\n", wantOut: "ab\n"},
		{name: "text ending its line", in: "data: \"line one\\n\"\n\ndata: \"line two\\n\"\n\n", wantOut: "line one\nline two\n"},
		{name: "objects on lines of their own", in: "data: \"thinking\"\n\ndata: {\"tool\": \"search\",\ndata: \"q\": 1}\n\ndata: \"done\"\n\n",
			wantOut: "thinking\n{\"tool\":\"search\",\"q\":1}\ndone\n"},
		{name: "numbers and arrays", in: "data: 42\n\ndata: [1, 2]\n\n", wantOut: "42\n[1,2]\n"},
		{name: "plain text chunks", in: "data: Hello\n\ndata:  world\n\n", wantOut: "Hello world\n"},
		{name: "multi-line data", in: "data: first\ndata: second\n\n", wantOut: "first\nsecond\n"},
		{name: "comments and other fields", in: ": keep-alive\nid: 1\nretry: 100\ndata: \"x\"\n\n", wantOut: "x\n"},
		{name: "error object", in: "data: \"partial\"\n\ndata: {\"error\": \"model timed out\", \"error_type\": \"Timeout\"}\n\n",
			wantOut: "partial\n", wantErr: "agent error: model timed out\n", agentErr: true},
		{name: "error event", in: "event: error\ndata: {\"error\": \"bad\"}\n\n", wantErr: "agent error: bad\n", agentErr: true},
		{name: "error event with text", in: "event: error\ndata: it broke\n\n", wantErr: "agent error: it broke\n", agentErr: true},
		{name: "empty", in: "", wantOut: ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			p := &ssePrinter{w: &out, errw: &errb}
			if err := readSSE(strings.NewReader(c.in), p.event); err != nil {
				t.Fatal(err)
			}
			p.end()
			if out.String() != c.wantOut {
				t.Errorf("stdout = %q, want %q", out.String(), c.wantOut)
			}
			if errb.String() != c.wantErr {
				t.Errorf("stderr = %q, want %q", errb.String(), c.wantErr)
			}
			if (p.agentErr != nil) != c.agentErr {
				t.Errorf("agent error = %v, want one: %v", p.agentErr, c.agentErr)
			}
		})
	}
}

func TestReadSSEEvents(t *testing.T) {
	type ev struct{ name, data string }
	var got []ev
	in := "event: token\ndata: a\n\n\n\ndata: b\n\nevent: end\n\n"
	if err := readSSE(strings.NewReader(in), func(name, data string) error {
		got = append(got, ev{name, data})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// An event with no data is not dispatched, and its name does not leak
	// into the next one.
	want := []ev{{"token", "a"}, {"", "b"}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("events = %v, want %v", got, want)
	}
}

func TestPrintBody(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{"response": "hi"}`, "{\"response\": \"hi\"}\n"},
		{`"just text"`, "just text\n"},
		{"plain\n", "plain\n"},
		{"", ""},
	} {
		var out bytes.Buffer
		if err := printBody(&out, strings.NewReader(c.in)); err != nil || out.String() != c.want {
			t.Errorf("printBody(%q) = %q, %v; want %q", c.in, out.String(), err, c.want)
		}
	}
}

func TestReadPrompt(t *testing.T) {
	file := filepath.Join(t.TempDir(), "prompt.txt")
	os.WriteFile(file, []byte("from a file\n"), 0o644)
	for _, c := range []struct {
		name  string
		args  []string
		file  string
		stdin string
		want  string
		code  int
	}{
		{name: "argument", args: []string{"hello"}, want: "hello"},
		{name: "stdin", args: []string{"-"}, stdin: "line one\nline two\n", want: "line one\nline two"},
		{name: "file", file: file, want: "from a file\n"},
		{name: "none", code: ExitUsage},
		{name: "both", args: []string{"x"}, file: file, code: ExitUsage},
		{name: "missing file", file: file + ".nope", code: ExitUsage},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := &cobra.Command{}
			cmd.SetIn(strings.NewReader(c.stdin))
			got, err := readPrompt(cmd, c.args, c.file)
			if ExitCode(err) != c.code {
				t.Fatalf("exit code %d (%v), want %d", ExitCode(err), err, c.code)
			}
			if err == nil && got != c.want {
				t.Errorf("prompt = %q, want %q", got, c.want)
			}
		})
	}
}
