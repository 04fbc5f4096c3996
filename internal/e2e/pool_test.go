package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	cp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol"
)

type poolInfo struct {
	RuntimeID string `json:"runtimeId"`
	Version   string `json:"version"`
	Size      int    `json:"size"`
	Ready     int    `json:"ready"`
	Claimed   int    `json:"claimed"`
}

func (b *berth) pools() []poolInfo {
	b.t.Helper()
	resp, err := http.Get("http://" + b.addr + "/berth/v1/pools")
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Pools []poolInfo }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		b.t.Fatal(err)
	}
	return out.Pools
}

// waitPool waits until the runtime's only pool satisfies cond.
func (b *berth) waitPool(what string, cond func(poolInfo) bool) poolInfo {
	b.t.Helper()
	var last []poolInfo
	deadline := time.Now().Add(20 * time.Second)
	for {
		last = b.pools()
		if len(last) == 1 && cond(last[0]) {
			return last[0]
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("waiting for %s: pools = %+v", what, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestWarmPool: a runtime asking for warm sandboxes gets them; a new session
// claims one (and keeps it to itself), the pool refills, moves to a new
// version when DEFAULT does, and goes away with the runtime.
func TestWarmPool(t *testing.T) {
	b := startBerth(t, "")
	ctx := context.Background()
	goa := goAgent(t)
	id, arn := b.deploy("pooled", goa, deployOpts{env: map[string]string{"BERTH_WARM_POOL_SIZE": "2"}})
	b.waitPool("two warm sandboxes", func(p poolInfo) bool { return p.Version == "1" && p.Ready == 2 })

	a, c := sessionID("pool-a"), sessionID("pool-b")
	ra := b.mustInvoke(invokeInput{arn: arn, session: a, body: map[string]any{"prompt": "from a pooled sandbox"}})
	rc := b.mustInvoke(invokeInput{arn: arn, session: c, body: map[string]any{}})
	if intOf(ra["count"]) != 1 || intOf(rc["count"]) != 1 {
		t.Errorf("first calls of two pooled sessions have counts %v and %v, want 1 and 1 (fresh sandboxes)", ra["count"], rc["count"])
	}
	if again := b.mustInvoke(invokeInput{arn: arn, session: a, body: map[string]any{}}); intOf(again["count"]) != 2 {
		t.Errorf("second call of a pooled session has count %v, want 2 (affinity)", again["count"])
	}
	b.waitPool("the pool to refill", func(p poolInfo) bool { return p.Claimed == 2 && p.Ready == 2 })
	lines := b.logs("stream=stdout&runtimeId=" + id + "&sessionId=" + url.QueryEscape(a))
	if len(lines) == 0 || lines[0].Text != "echo: from a pooled sandbox" {
		t.Errorf("pooled session's logs = %+v", lines)
	}

	if _, err := b.control.UpdateAgentRuntime(ctx, updateInput(id, goa, map[string]string{"BERTH_WARM_POOL_SIZE": "1"})); err != nil {
		t.Fatal(err)
	}
	b.waitPool("the pool to follow DEFAULT to version 2", func(p poolInfo) bool { return p.Version == "2" && p.Ready == 1 })

	if _, err := b.control.DeleteAgentRuntime(ctx, &cp.DeleteAgentRuntimeInput{AgentRuntimeId: aws.String(id)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the pool to be released", func() bool { return len(b.pools()) == 0 })
	b.stop()
	if left := b.leftovers(); len(left) > 0 {
		t.Errorf("left behind:\n%s", strings.Join(left, "\n"))
	}
}
