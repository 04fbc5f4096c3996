package kubernetes_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/berthrun/berth/internal/sandbox"
)

// TestShared checks what lets replicas of Berth share sandboxes: a second
// driver of the same owner (another replica) attaches to a pod the first
// started, lists it with its labels and removes it, and the first sees it
// go.
func TestShared(t *testing.T) {
	c := testCluster(t)
	a := c.driver(t, "shared", nil)
	b := c.driver(t, "shared", nil)
	other := c.driver(t, "someone-else", nil)
	ctx := t.Context()

	// An agent answering HTTP on 8080 with busybox's httpd.
	sbA, err := a.Start(ctx, sandbox.Spec{
		ID: "shared-1", Args: []string{"sh", "-c", "echo hello > /tmp/ping; exec httpd -f -p 8080 -h /tmp"},
		Env: []string{"PATH=/bin"}, WorkDir: "/work", Labels: map[string]string{"session": "s1", "replica": "a"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sbA.Stop(context.Background()) })

	sbB, err := b.Attach(ctx, "shared-1")
	if err != nil {
		t.Fatalf("attach from another replica: %v", err)
	}
	if got := get(t, sbB, "/ping"); got != "hello" {
		t.Errorf("GET /ping through the attached sandbox = %q, want hello", got)
	}
	if again, err := b.Attach(ctx, "shared-1"); err != nil || again != sbB {
		t.Errorf("attaching twice = %v, %v; want the same sandbox", again, err)
	}

	list, err := b.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(list, func(l sandbox.Listing) bool { return l.ID == "shared-1" })
	if i < 0 || list[i].Labels["session"] != "s1" || list[i].Labels["replica"] != "a" || list[i].Created.IsZero() {
		t.Errorf("List = %+v, want shared-1 with its labels and creation time", list)
	}
	if l, _ := other.List(ctx); len(l) != 0 {
		t.Errorf("a driver of another owner lists %+v", l)
	}
	if _, err := other.Attach(ctx, "shared-1"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("a driver of another owner attaches: err = %v, want ErrNotFound", err)
	}
	if _, err := b.Attach(ctx, "no-such-sandbox"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("attach to a missing sandbox: err = %v, want ErrNotFound", err)
	}

	if err := b.Remove(ctx, "shared-1"); err != nil {
		t.Fatal(err)
	}
	for _, sb := range []sandbox.Sandbox{sbA, sbB} {
		select {
		case <-sb.Done():
		case <-time.After(30 * time.Second):
			t.Fatal("a replica's sandbox is not done after another removed it")
		}
	}
	if err := b.Remove(ctx, "shared-1"); err != nil {
		t.Errorf("removing a removed sandbox: %v", err)
	}
	if _, err := a.Attach(ctx, "shared-1"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("attach to a removed sandbox: err = %v, want ErrNotFound", err)
	}
}

// get returns the first line of the agent's answer to GET path.
func get(t *testing.T, sb sandbox.Sandbox, path string) string {
	t.Helper()
	conn, err := sb.DialContext(t.Context(), "tcp", "127.0.0.1:8080")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: agent\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	return line[:max(len(line)-1, 0)]
}
