package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeOutput is a driver's copy of an agent's output, served the way the
// Kubernetes API server serves a pod's log with timestamps: since rounded
// down to the second, then the last tail lines; a follow serves the same
// and then what the test writes to live.
type fakeOutput struct {
	lines []string // "time text"
	calls []openCall
	live  *io.PipeWriter
}

type openCall struct {
	since  time.Time
	tail   int
	follow bool
}

func (f *fakeOutput) add(t time.Time, text string) string {
	rec := t.UTC().Format(time.RFC3339Nano) + " " + text
	f.lines = append(f.lines, rec)
	return rec
}

func (f *fakeOutput) open(ctx context.Context, since time.Time, tail int, follow bool) (io.ReadCloser, error) {
	f.calls = append(f.calls, openCall{since, tail, follow})
	var sel []string
	for _, rec := range f.lines {
		ts, _, _ := strings.Cut(rec, " ")
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || !t.Before(since.Truncate(time.Second)) {
			sel = append(sel, rec) // untimed lines are continuations: kept
		}
	}
	if tail > 0 && len(sel) > tail {
		sel = sel[len(sel)-tail:]
	}
	history := strings.NewReader(strings.Join(sel, "\n") + "\n")
	if len(sel) == 0 {
		history = strings.NewReader("")
	}
	if !follow {
		return io.NopCloser(history), nil
	}
	r, w := io.Pipe()
	f.live = w
	go func() {
		<-ctx.Done()
		w.CloseWithError(ctx.Err())
	}()
	return io.NopCloser(io.MultiReader(history, r)), nil
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 500_000_000, time.UTC)

// sample is an agent's output: levels said in words and JSON, an empty
// line (which the kubelet prints without the space) and a line longer
// than maxLine.
func sample() *fakeOutput {
	f := &fakeOutput{}
	f.add(t0, "hello")
	f.add(t0.Add(300*time.Millisecond), "ERROR: boom")
	f.add(t0.Add(700*time.Millisecond), `{"level":"warn","msg":"slow"}`)
	f.lines = append(f.lines, t0.Add(time.Second).Format(time.RFC3339Nano)) // empty line
	f.add(t0.Add(1200*time.Millisecond), "DEBUG detail")
	f.add(t0.Add(2*time.Second), strings.Repeat("y", maxLine+10))
	f.add(t0.Add(3*time.Second), "bye")
	return f
}

func texts(lines []Line) []string {
	var out []string
	for _, l := range lines {
		out = append(out, fmt.Sprintf("%s:%s", l.Level, l.Text[:min(len(l.Text), 6)]))
	}
	return out
}

func TestReadStream(t *testing.T) {
	all := []string{"info:hello", "error:ERROR:", "warn:{\"leve", "info:", "debug:DEBUG ", "info:yyyyyy", "info:yyyyyy", "info:bye"}
	cases := []struct {
		name       string
		q          Query
		want       []string
		serverTail int // the tail the driver is asked for
	}{
		{"all", Query{}, all, 0},
		{"stdout is every line", Query{Stream: Stdout}, all, 0},
		{"no stderr: the streams are merged", Query{Stream: Stderr}, nil, 0},
		{"tail by the driver", Query{Tail: 2}, []string{"info:yyyyyy", "info:bye"}, 2},
		{"level", Query{Level: "warn"}, []string{"error:ERROR:", "warn:{\"leve"}, 0},
		{"level and tail, tail here", Query{Level: "warn", Tail: 1}, []string{"warn:{\"leve"}, 0},
		{"until", Query{Until: t0.Add(time.Second)}, all[:4], 0},
		{"until and tail, tail here", Query{Until: t0.Add(time.Second), Tail: 2}, all[2:4], 0},
		{"since to the nanosecond", Query{Since: t0.Add(200 * time.Millisecond)}, all[1:], 0},
		{"since between seconds and tail, tail here", Query{Since: t0.Add(200 * time.Millisecond), Tail: 10}, all[1:], 0},
		{"since on a second and tail, tail by the driver", Query{Since: t0.Add(500 * time.Millisecond), Tail: 1}, []string{"info:bye"}, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := sample()
			h, err := ReadStream(t.Context(), "s1", c.q, f.open)
			if err != nil {
				t.Fatal(err)
			}
			if got := texts(h.Lines); !slices.Equal(got, c.want) {
				t.Errorf("lines %q\nwant  %q", got, c.want)
			}
			for _, l := range h.Lines {
				if l.Session != "s1" || l.Stream != Stdout || l.Time.Before(t0) {
					t.Errorf("line %+v: want session s1, stdout, a time", l)
				}
			}
			if len(f.calls) != 1 || f.calls[0].tail != c.serverTail || f.calls[0].follow || !f.calls[0].since.Equal(c.q.Since) {
				t.Errorf("driver asked %+v, want once with tail %d, since %v", f.calls, c.serverTail, c.q.Since)
			}
		})
	}
}

// The continuation of a split line takes the time of its start.
func TestReadStreamSplitLineTime(t *testing.T) {
	h, err := ReadStream(t.Context(), "s1", Query{}, sample().open)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := h.Lines[5], h.Lines[6]; !a.Time.Equal(t0.Add(2*time.Second)) || !b.Time.Equal(a.Time) || len(a.Text)+len(b.Text) != maxLine+10 {
		t.Errorf("split line: %v %d bytes, %v %d bytes", a.Time, len(a.Text), b.Time, len(b.Text))
	}
}

func TestStreamFollow(t *testing.T) {
	f := sample()
	q := Query{Level: "info", Tail: 1}
	h, err := ReadStream(t.Context(), "s1", q, f.open)
	if err != nil {
		t.Fatal(err)
	}
	if got := texts(h.Lines); !slices.Equal(got, []string{"info:bye"}) {
		t.Fatalf("history %q", got)
	}
	// Printed after the history was read: the follow sees it, with the
	// lines of the history's last second again, which it skips.
	f.add(t0.Add(3100*time.Millisecond), "DEBUG hidden")
	f.add(t0.Add(3200*time.Millisecond), "after one")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	got := make(chan Line)
	done := make(chan error, 1)
	go func() {
		done <- h.Follow(ctx, func(l Line) error {
			got <- l
			return nil
		})
	}()
	next := func() string {
		select {
		case l := <-got:
			return l.Level + ":" + l.Text
		case err := <-done:
			t.Fatalf("follow ended: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("no line followed")
		}
		return ""
	}
	if l := next(); l != "info:after one" {
		t.Errorf("first followed line %s, want info:after one", l)
	}
	call := f.calls[len(f.calls)-1]
	if !call.follow || call.tail != 0 || !call.since.Equal(t0.Add(3*time.Second)) {
		t.Errorf("follow asked %+v, want since the last line read (%v)", call, t0.Add(3*time.Second))
	}
	fmt.Fprintf(f.live, "%s DEBUG live hidden\n%s live\n", t0.Add(4*time.Second).Format(time.RFC3339Nano), t0.Add(5*time.Second).Format(time.RFC3339Nano))
	if l := next(); l != "info:live" {
		t.Errorf("live line %s, want info:live", l)
	}
	// The agent exits: its output ends, and so does the follow.
	f.live.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("follow ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not end with the output")
	}
}

// A follow ends, without error, when its caller goes away.
func TestStreamFollowCancel(t *testing.T) {
	f := &fakeOutput{}
	h, err := ReadStream(t.Context(), "s1", Query{}, f.open)
	if err != nil || len(h.Lines) != 0 {
		t.Fatalf("history of no output: %v, %v", h, err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- h.Follow(ctx, func(Line) error { return nil }) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("follow ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not end with its context")
	}
	if c := f.calls[len(f.calls)-1]; !c.follow || !c.since.IsZero() {
		t.Errorf("follow of no history asked %+v, want from the start", c)
	}
}

func TestReadStreamOpenError(t *testing.T) {
	gone := errors.New("no such sandbox")
	_, err := ReadStream(t.Context(), "s1", Query{}, func(context.Context, time.Time, int, bool) (io.ReadCloser, error) { return nil, gone })
	if err == nil || !strings.Contains(err.Error(), "session s1") || !errors.Is(err, gone) {
		t.Errorf("err = %v, want it to wrap the driver's and name the session", err)
	}
}

// BenchmarkReadStream converts a pod log of 10,000 lines, with a level
// filter and a tail (so every line is parsed here).
func BenchmarkReadStream(b *testing.B) {
	f := &fakeOutput{}
	for i := range 10_000 {
		f.add(t0.Add(time.Duration(i)*time.Millisecond), fmt.Sprintf(`{"level":"info","msg":"line %d of the agent's output"}`, i))
	}
	data := strings.Join(f.lines, "\n") + "\n"
	open := func(context.Context, time.Time, int, bool) (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader(data)), nil
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		h, err := ReadStream(b.Context(), "s1", Query{Level: "info", Tail: 100}, open)
		if err != nil || len(h.Lines) != 100 {
			b.Fatal(len(h.Lines), err)
		}
	}
}
