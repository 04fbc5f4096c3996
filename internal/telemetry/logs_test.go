package telemetry

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeSession logs lines through real pipes, as an agent would.
func writeSession(t *testing.T, dir string, limit int64, lines map[string][]string) {
	t.Helper()
	l, err := OpenSessionLog(dir, limit)
	if err != nil {
		t.Fatal(err)
	}
	for _, stream := range []string{Stdout, Stderr} {
		w, err := l.Pipe(stream)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range lines[stream] {
			fmt.Fprintln(w, line)
		}
		w.Close()
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestSessionLogReadBack(t *testing.T) {
	dir := t.TempDir()
	long := strings.Repeat("x", maxLine+10)
	writeSession(t, dir, 1<<20, map[string][]string{Stdout: {"one", "two", long}, Stderr: {"oops"}})

	all, err := Read(Query{Dirs: map[string]string{"s1": dir}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, l := range all {
		if l.Session != "s1" {
			t.Errorf("line %+v not attributed to s1", l)
		}
		got[l.Stream] = append(got[l.Stream], l.Text[:min(len(l.Text), 5)])
	}
	// Each stream keeps its order (across streams, lines are ordered by
	// when they were read); the long line is split at maxLine.
	if s := strings.Join(got[Stdout], " "); s != "one two xxxxx xxxxx" {
		t.Errorf("stdout = %s", s)
	}
	if s := strings.Join(got[Stderr], " "); s != "oops" {
		t.Errorf("stderr = %s", s)
	}

	cases := []struct {
		name string
		q    Query
		want int
	}{
		{"stderr only", Query{Stream: Stderr}, 1},
		{"tail", Query{Tail: 2}, 2},
		{"since the future", Query{Since: time.Now().Add(time.Hour)}, 0},
		{"since the past", Query{Since: time.Now().Add(-time.Hour)}, 5},
	}
	for _, c := range cases {
		c.q.Dirs = map[string]string{"s1": dir}
		lines, err := Read(c.q)
		if err != nil || len(lines) != c.want {
			t.Errorf("%s: %d lines, %v; want %d", c.name, len(lines), err, c.want)
		}
	}
}

func TestSessionLogLimit(t *testing.T) {
	dir := t.TempDir()
	var many []string
	for i := range 1000 {
		many = append(many, fmt.Sprintf("line %d", i))
	}
	writeSession(t, dir, 4096, map[string][]string{Stdout: many})
	fi, err := os.Stat(filepath.Join(dir, LogFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > 4096+200 {
		t.Errorf("log grew to %d bytes past its 4096-byte limit", fi.Size())
	}
	lines, _ := Read(Query{Dirs: map[string]string{"s": dir}})
	if last := lines[len(lines)-1]; !strings.Contains(last.Text, "log limit") {
		t.Errorf("last line %q does not say the limit was reached", last.Text)
	}
}

func TestFollow(t *testing.T) {
	dir := t.TempDir()
	writeSession(t, dir, 1<<20, map[string][]string{Stdout: {"old"}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan Line, 10)
	done := make(chan error, 1)
	dirs := map[string]string{"s": dir}
	go func() {
		done <- Follow(ctx, Query{Dirs: dirs}, func() map[string]string { return dirs }, 5*time.Millisecond,
			func(l Line) error { got <- l; return nil })
	}()
	if l := <-got; l.Text != "old" {
		t.Fatalf("history = %+v", l)
	}
	writeSession(t, dir, 1<<20, map[string][]string{Stdout: {"new"}})
	select {
	case l := <-got:
		if l.Text != "new" || l.Session != "s" {
			t.Errorf("followed %+v, want the new line", l)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("new line not followed")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Follow = %v after cancel", err)
	}
}
