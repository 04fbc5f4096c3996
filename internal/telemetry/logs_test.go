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

func TestLineLevel(t *testing.T) {
	cases := []struct{ stream, text, want string }{
		{Stdout, "hello", "info"},
		{Stderr, "Traceback (most recent call last):", "warn"},
		{Stderr, "INFO:     127.0.0.1 - GET /ping", "info"},
		{Stdout, "ERROR:root:model call failed", "error"},
		{Stdout, "[DEBUG] tokens=12", "debug"},
		{Stdout, `{"level":"warning","msg":"slow"}`, "warn"},
		{Stderr, `{"severity":"ERROR","message":"x"}`, "error"},
		{Stdout, "Informal text", "info"},
	}
	for _, c := range cases {
		if got := lineLevel(c.stream, c.text); got != c.want {
			t.Errorf("lineLevel(%s, %q) = %s, want %s", c.stream, c.text, got, c.want)
		}
	}
}

func TestPrune(t *testing.T) {
	root := t.TempDir()
	mk := func(rt, session string, size int, age time.Duration) string {
		dir := filepath.Join(root, rt, session)
		os.MkdirAll(dir, 0o755)
		p := filepath.Join(dir, LogFile)
		os.WriteFile(p, make([]byte, size), 0o644)
		mod := time.Now().Add(-age)
		os.Chtimes(p, mod, mod)
		return dir
	}
	old := mk("rt", "old", 10, 48*time.Hour)
	liveOld := mk("rt", "live-old", 10, 48*time.Hour)
	big1 := mk("rt", "big1", 600, 3*time.Hour)
	big2 := mk("rt2", "big2", 600, 2*time.Hour)
	recent := mk("rt2", "recent", 10, time.Minute)
	pool := mk("rt2", "pool-x", 10, 72*time.Hour)

	n, err := Prune(root, 24*time.Hour, 1000, func(dir string) bool { return dir == liveOld })
	if err != nil {
		t.Fatal(err)
	}
	exists := func(dir string) bool { _, err := os.Stat(dir); return err == nil }
	// old goes for its age; then big1, the oldest, until under 1000 bytes.
	if n != 2 || exists(old) || exists(big1) || !exists(liveOld) || !exists(big2) || !exists(recent) || !exists(pool) {
		t.Errorf("Prune removed %d; old %v big1 %v liveOld %v big2 %v recent %v pool %v",
			n, exists(old), exists(big1), exists(liveOld), exists(big2), exists(recent), exists(pool))
	}
}
