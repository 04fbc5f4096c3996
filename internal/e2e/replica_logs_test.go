package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestReplicaLogs: a session's output can be read through a replica that
// did not start it (which has no log file of it): the logs API, with tail
// and level, and berth logs, answer from the pod's log in the shape of the
// starting replica's; a follow through that replica gets a line printed
// after it began; a session no replica knows is still a 404.
func TestReplicaLogs(t *testing.T) {
	kube := requireKube(t)
	dsn := pg.Database(t)
	a := startBerth(t, "", kube.replicaArgs(dsn, "a")...)
	b := startBerth(t, "", kube.replicaArgs(dsn, "b")...)
	id, arn := a.deploy("replogs", goAgent(t), deployOpts{})
	b.waitReady(id, "")

	sid := sessionID("replogs")
	for _, p := range []string{"first", "second", "third"} {
		a.mustInvoke(invokeInput{arn: arn, session: sid, body: map[string]any{"prompt": p}})
	}
	query := "runtimeId=" + id + "&sessionId=" + url.QueryEscape(sid)
	want := []string{"echo: first", "echo: second", "echo: third"}
	texts := func(lines []logLine) []string {
		var out []string
		for _, l := range lines {
			out = append(out, l.Text)
		}
		return out
	}
	// The kubelet may not have written the last line to the pod's log the
	// moment the call returned, nor the starting replica copied it.
	var got []logLine
	waitFor(t, 10*time.Second, "every line through the starting replica", func() bool {
		got = a.logs(query)
		return len(got) >= len(want)
	})
	if !slices.Equal(texts(got), want) {
		t.Fatalf("through the starting replica: %q, want %q", texts(got), want)
	}
	waitFor(t, 10*time.Second, "every line through the other replica", func() bool {
		got = b.logs(query)
		return len(got) >= len(want)
	})
	if !slices.Equal(texts(got), want) {
		t.Errorf("through the other replica: %q, want %q", texts(got), want)
	}
	for _, l := range got {
		if l.Session != sid || l.Stream != "stdout" || time.Since(l.Time) > time.Minute || time.Until(l.Time) > time.Minute {
			t.Errorf("line %+v: want session %s, stdout and the time it was printed", l, sid)
		}
	}
	if got := texts(b.logs(query + "&tail=2")); !slices.Equal(got, want[1:]) {
		t.Errorf("tail=2 through the other replica: %q, want %q", got, want[1:])
	}
	if got := b.logs(query + "&level=error"); len(got) != 0 {
		t.Errorf("level=error through the other replica: %+v, want nothing", got)
	}
	r := b.cli().ok(t.TempDir(), "logs", "--runtime-id", id, "--session", sid, "-n", "2")
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 2 ||
		!strings.HasSuffix(lines[0], "| echo: second") || !strings.HasSuffix(lines[1], "| echo: third") {
		t.Errorf("berth logs -n 2 through the other replica:\n%s", r)
	}

	// Following through b, a line printed by a call through a arrives.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.addr+"/berth/v1/logs?follow=true&"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("follow: %s", resp.Status)
	}
	dec := json.NewDecoder(resp.Body)
	next := func() logLine {
		t.Helper()
		var l logLine
		if err := dec.Decode(&l); err != nil {
			t.Fatalf("follow: %v", err)
		}
		return l
	}
	for _, w := range want {
		if l := next(); l.Text != w {
			t.Errorf("followed history: %+v, want %q", l, w)
		}
	}
	a.mustInvoke(invokeInput{arn: arn, session: sid, body: map[string]any{"prompt": "fourth"}})
	if l := next(); l.Text != "echo: fourth" || l.Session != sid {
		t.Errorf("followed line %+v, want this session's 'echo: fourth'", l)
	}
	cancel()

	// A session unknown everywhere is a 404 through either replica.
	for _, r := range []*berth{a, b} {
		resp, err := http.Get("http://" + r.addr + "/berth/v1/logs?runtimeId=" + id + "&sessionId=" + sessionID("nobody"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("logs of an unknown session: %s, want 404 Not Found", resp.Status)
		}
	}
}
