package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// output writes a command's results: short text for people, or JSON for
// scripts (--output json). Results go to stdout; progress and notes go to
// stderr so that stdout stays parseable.
type output struct {
	w, errw io.Writer
	json    bool
	// tty reports whether stdout (errTTY: stderr) is a terminal: progress
	// lines are redrawn in place and colour is used only there.
	tty, errTTY bool
	color       bool
}

func newOutput(cmd *cobra.Command, asJSON bool) *output {
	o := &output{w: cmd.OutOrStdout(), errw: cmd.ErrOrStderr(), json: asJSON}
	o.tty, o.errTTY = isTerminal(o.w), isTerminal(o.errw)
	_, noColor := os.LookupEnv("NO_COLOR")
	o.color = !noColor && os.Getenv("TERM") != "dumb"
	return o
}

// isTerminal reports whether the stream s is a terminal.
func isTerminal(s any) bool {
	f, ok := s.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (o *output) printf(format string, args ...any) {
	fmt.Fprintf(o.w, format, args...)
}

// notef writes a note for people to stderr; it is left out of JSON output.
func (o *output) notef(format string, args ...any) {
	if o.json {
		return
	}
	fmt.Fprintf(o.errw, format, args...)
}

// warnf writes a warning to stderr, in JSON mode too.
func (o *output) warnf(format string, args ...any) {
	fmt.Fprintf(o.errw, "warning: "+format, args...)
}

func (o *output) printJSON(v any) error {
	enc := json.NewEncoder(o.w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// table writes rows under headers, aligned in columns.
func (o *output) table(headers []string, rows [][]string) {
	tw := tabwriter.NewWriter(o.w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(headers, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// ANSI colours, used on terminals only.
const (
	green  = "32"
	red    = "31"
	yellow = "33"
	faint  = "2"
)

// paint colours s for a terminal writer; onErr says which stream s goes to.
func (o *output) paint(s, code string, onErr bool) string {
	tty := o.tty
	if onErr {
		tty = o.errTTY
	}
	if !tty || !o.color {
		return s
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}

// statusColor picks the colour of a runtime or endpoint status.
func statusColor(status string) string {
	switch {
	case status == "READY":
		return green
	case strings.HasSuffix(status, "FAILED"):
		return red
	}
	return yellow
}

// progress shows how a long operation is going on stderr: on a terminal one
// status line redrawn in place, elsewhere one line per change.
type progress struct {
	o     *output
	start time.Time
	last  string
	drawn bool
}

func (o *output) progress() *progress { return &progress{o: o, start: time.Now()} }

// set shows msg as the current state.
func (p *progress) set(msg string) {
	if p.o.json {
		return
	}
	if p.o.errTTY {
		fmt.Fprintf(p.o.errw, "\r\x1b[K%s %s", p.o.paint(fmt.Sprintf("[%4.1fs]", time.Since(p.start).Seconds()), faint, true), msg)
		p.drawn = true
		return
	}
	if msg != p.last {
		fmt.Fprintf(p.o.errw, "  %s\n", msg)
	}
	p.last = msg
}

// done ends the progress line with a final message.
func (p *progress) done(msg string) {
	if p.o.json {
		return
	}
	if p.drawn {
		fmt.Fprint(p.o.errw, "\r\x1b[K")
	}
	fmt.Fprintf(p.o.errw, "  %s\n", msg)
}

// humanSize formats a byte count for people.
func humanSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// humanDuration formats seconds for people: 42s, 5m3s, 2h10m.
func humanDuration(seconds float64) string {
	d := time.Duration(seconds) * time.Second
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}

// shortDigest abbreviates a sha256: digest for people.
func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

// jsonLine writes v as one line of JSON.
func jsonLine(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
