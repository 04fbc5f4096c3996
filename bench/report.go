package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"time"
)

// methodNotes explains the choices every section shares; each table adds
// its own.
const methodNotes = `
Berth runs inside the harness process (package internal/server, the same code as ` + "`berth server`" + `), on
127.0.0.1, with each session in a runc (or crun) sandbox reached through its network namespace. Every server
and by-hand driver of a run gets its own cgroup parent; after each server shuts down (cancel its context, wait
for Serve) the harness checks that no sandbox cgroup is left under it.

- **Same agent, three paths.** The warm, streaming and payload sections use one live Berth session of the Go
  agent. *direct* reaches that very agent process inside its sandbox's network namespace (found from the
  session's cgroup); nginx runs inside that namespace too (nsenter), proxying to the same 127.0.0.1:8080. So the
  three paths differ only by the hop: no second agent copy, no extra forwarder.
- **Load generator out of process.** wrk (Debian's) drives the warm section when installed, started inside the
  sandbox's namespace for *direct* and *nginx*; then the process hosting Berth runs only Berth, and its CPU
  profile shows only Berth. Without wrk a Go generator in the harness stands in (and competes with Berth for the
  same Go runtime).
- **Memory.** Berth is in-process, so its memory is the process's: the payload section reads VmRSS before and
  VmHWM after each call (peak reset through /proc/self/clear_refs, garbage collected and freed first); the client
  streams with small buffers, and the *direct* row (Berth idle) shows what the client alone adds. Density reports
  Go's live heap and stacks per session, and VmRSS per session, next to the sandboxes' own cgroup memory.
- **Noise.** The machine is shared: the load average at the start and end of the run is recorded above. On 2 cores
  the load generator, the proxy and the agent compete for the same CPUs, which is why ratios are measured side by
  side in one run.`

// table is one section's results.
type table struct {
	title  string
	method string // how it was measured, one paragraph
	header []string
	rows   [][]string
	notes  []string // rows skipped and why, errors
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) note(format string, args ...any) {
	t.notes = append(t.notes, fmt.Sprintf(format, args...))
}

// Verdicts of a target.
const (
	pass = "PASS"
	miss = "MISS"
	skip = "SKIP"
)

// verdict is one target and how the run did against it.
type verdict struct {
	target, goal, got, status string
}

// report collects a run's results.
type report struct {
	out      io.Writer
	machine  machine
	command  string
	notes    []string // about the run as a whole
	tables   []*table
	verdicts []verdict
	profile  string // top of the CPU profile, if one was taken
	errs     []error
}

// section starts a table and returns it; it is printed by done.
func (r *report) section(title, method string, header ...string) *table {
	t := &table{title: title, method: method, header: header}
	r.tables = append(r.tables, t)
	return t
}

// done prints a finished table.
func (r *report) done(t *table) {
	fmt.Fprintln(r.out)
	writeTable(r.out, t)
}

// check records a verdict: ok tells whether got meets goal.
func (r *report) check(target, goal, got string, ok bool) {
	status := miss
	if ok {
		status = pass
	}
	r.verdicts = append(r.verdicts, verdict{target, goal, got, status})
}

// skipped records a target that this run could not measure.
func (r *report) skipped(target, goal, why string) {
	r.verdicts = append(r.verdicts, verdict{target, goal, why, skip})
}

// runError records a failure outside any one section's table.
func (r *report) runError(err error) {
	r.notes = append(r.notes, "**error**: "+err.Error())
	r.errs = append(r.errs, err)
}

// fail records a section's failure; the run goes on with the next one.
func (r *report) fail(t *table, err error) {
	t.note("**error**: %v", err)
	r.errs = append(r.errs, fmt.Errorf("%s: %w", t.title, err))
}

func writeTable(w io.Writer, t *table) {
	fmt.Fprintf(w, "### %s\n\n", t.title)
	if len(t.rows) > 0 {
		fmt.Fprintf(w, "| %s |\n", strings.Join(t.header, " | "))
		fmt.Fprintf(w, "|%s\n", strings.Repeat("---|", len(t.header)))
		for _, row := range t.rows {
			fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
		}
		fmt.Fprintln(w)
	}
	for _, n := range t.notes {
		fmt.Fprintf(w, "- %s\n", n)
	}
	if len(t.notes) > 0 {
		fmt.Fprintln(w)
	}
}

func writeVerdicts(w io.Writer, vs []verdict) {
	fmt.Fprintln(w, "| target | goal | measured | verdict |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, v := range vs {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", v.target, v.goal, v.got, v.status)
	}
}

// printSummary prints the targets at the end of a run.
func (r *report) printSummary() {
	fmt.Fprintln(r.out, "\n### Targets")
	fmt.Fprintln(r.out)
	writeVerdicts(r.out, r.verdicts)
}

// writeFile writes the whole report as Markdown to path.
func (r *report) writeFile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	m := r.machine
	fmt.Fprintf(f, "# Berth benchmark results\n\n")
	fmt.Fprintf(f, "Measured %s by `%s`.\n\n", m.Date.Format("2006-01-02 15:04 MST"), r.command)
	fmt.Fprintf(f, "## Machine\n\n| | |\n|---|---|\n")
	fmt.Fprintf(f, "| CPU | %s, %d cores |\n| memory | %s |\n| kernel | %s |\n| OS | %s |\n| Go | %s |\n| cgroups | %s |\n",
		m.CPU, m.Cores, m.Memory, m.Kernel, m.OS, m.Go, m.Cgroups)
	for _, rt := range m.Runtimes {
		fmt.Fprintf(f, "| %s | %s |\n", rt[0], rt[1])
	}
	fmt.Fprintf(f, "| nginx | %s |\n| wrk | %s |\n| load average (1, 5, 15 min) at start / at end (with the run's own) | %s / %s |\n\n",
		orNone(m.Nginx), orNone(m.Wrk), m.Load, m.LoadEnd)
	if len(r.notes) > 0 {
		for _, n := range r.notes {
			fmt.Fprintf(f, "- %s\n", n)
		}
		fmt.Fprintln(f)
	}
	fmt.Fprintf(f, "## How\n\n%s\n\n## Targets\n\n", strings.TrimSpace(methodNotes))
	writeVerdicts(f, r.verdicts)
	fmt.Fprintf(f, "\n## Results\n\n")
	for _, t := range r.tables {
		writeTable(f, t)
		if t.method != "" {
			fmt.Fprintf(f, "How: %s\n\n", t.method)
		}
	}
	if r.profile != "" {
		fmt.Fprintf(f, "## CPU profile of Berth, warm invoke at concurrency 32\n\n```\n%s\n```\n", r.profile)
	}
	return f.Close()
}

func orNone(s string) string {
	if s == "" {
		return "not installed"
	}
	return s
}

// pct returns the p-th percentile of d (nearest rank).
func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(float64(len(s))*p/100)) - 1
	return s[max(0, min(i, len(s)-1))]
}

// ms formats a duration for a table: µs below a millisecond, ms below a
// second.
func ms(d time.Duration) string {
	switch a := d.Abs(); {
	case a < time.Millisecond:
		return fmt.Sprintf("%d µs", d.Microseconds())
	case a < time.Second:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

// ratio formats a/b as "1.23×".
func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

// mib formats bytes in MiB.
func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }

// kib formats bytes in KiB.
func kib(b float64) string { return fmt.Sprintf("%.0f KiB", b/1024) }
