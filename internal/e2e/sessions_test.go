package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	dp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcore"
	cptypes "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// TestSessions runs the session suite against a Python standard-library
// agent and a compiled Go agent, each in real sandboxes, then checks that
// nothing of any sandbox is left on the host.
func TestSessions(t *testing.T) {
	b := startBerth(t, "")
	agents := []agent{pythonAgent(t), goAgent(t)}
	for _, a := range agents {
		t.Run(a.name, func(t *testing.T) {
			_, arn := b.with(t).deploy("sessions_"+a.name, a, deployOpts{env: map[string]string{"GREETING": "hello"},
				headers: []string{"X-Amzn-Bedrock-AgentCore-Runtime-Custom-Tenant"}})
			for _, c := range []struct {
				name string
				test func(*testing.T, *berth, string)
			}{
				{"affinity", testAffinity}, {"headers", testHeaders}, {"logs", testLogs}, {"isolation", testIsolation}, {"streaming", testStreaming},
				{"stop", testStop}, {"disconnect", testDisconnect}, {"crash", testCrash}, {"payload100MB", testLargePayload},
			} {
				t.Run(c.name, func(t *testing.T) { c.test(t, b.with(t), arn) })
			}
		})
	}
	b.stop()
	if left := b.leftovers(); len(left) > 0 {
		t.Errorf("sandboxes left behind after the server stopped:\n%s", strings.Join(left, "\n"))
	}
}

func intOf(v any) int {
	f, _ := v.(float64)
	return int(f)
}

// testAffinity: calls with one session ID reach one sandbox, whose
// in-memory state survives between calls; the contract's environment is set.
func testAffinity(t *testing.T, b *berth, arn string) {
	sid := sessionID("affinity")
	first := b.mustInvoke(invokeInput{arn: arn, session: sid, body: map[string]any{"prompt": "hi",
		"env": []string{"DOCKER_CONTAINER", "AWS_REGION", "GREETING"}}})
	second := b.mustInvoke(invokeInput{arn: arn, session: sid, body: map[string]any{"prompt": "again"}})
	if intOf(first["count"]) != 1 || intOf(second["count"]) != 2 || first["pid"] != second["pid"] {
		t.Errorf("calls of one session: count %v then %v, pid %v then %v; want 1, 2 and one process",
			first["count"], second["count"], first["pid"], second["pid"])
	}
	if first["session"] != sid || first["requestId"] == "" || first["requestId"] == second["requestId"] {
		t.Errorf("agent saw session %v, request ids %v and %v", first["session"], first["requestId"], second["requestId"])
	}
	env, _ := first["env"].(map[string]any)
	if env["DOCKER_CONTAINER"] != "1" || env["AWS_REGION"] != "us-east-1" || env["GREETING"] != "hello" {
		t.Errorf("agent environment = %v", env)
	}
	other := b.mustInvoke(invokeInput{arn: arn, session: sessionID("affinity-other"), body: map[string]any{}})
	if intOf(other["count"]) != 1 {
		t.Errorf("a new session's first call has count %v, want 1", other["count"])
	}
	lines := b.logs("stream=stdout&runtimeId=" + runtimeIDOf(arn) + "&sessionId=" + url.QueryEscape(sid))
	if len(lines) != 2 || lines[0].Text != "echo: hi" || lines[0].Stream != "stdout" || lines[1].Text != "echo: again" || lines[0].Session != sid {
		t.Errorf("session logs = %+v; want its two echo lines on stdout", lines)
	}
	for _, l := range b.logs("level=warn&runtimeId=" + runtimeIDOf(arn) + "&sessionId=" + url.QueryEscape(sid)) {
		if l.Stream == "stdout" {
			t.Errorf("level=warn returned the info line %+v", l)
		}
	}
	if n := len(b.logs("until=1h&runtimeId=" + runtimeIDOf(arn) + "&sessionId=" + url.QueryEscape(sid))); n != 0 {
		t.Errorf("until an hour ago returned %d lines", n)
	}
}

// testHeaders: the agent gets the contract's headers, trace context and
// allowlisted headers, and never the caller's credentials; trace headers are
// echoed in the response.
func testHeaders(t *testing.T, b *berth, arn string) {
	const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	payload, _ := json.Marshal(map[string]any{"op": "headers"})
	out, err := b.data.InvokeAgentRuntime(context.Background(), &dp.InvokeAgentRuntimeInput{
		AgentRuntimeArn: aws.String(arn), RuntimeSessionId: aws.String(sessionID("headers")), Payload: payload,
		ContentType: aws.String("application/json"), TraceParent: aws.String(traceparent), Baggage: aws.String("tenant=t1"),
	}, func(o *dp.Options) {
		o.APIOptions = append(o.APIOptions,
			smithyhttp.AddHeaderValue("X-Amzn-Bedrock-AgentCore-Runtime-Custom-Tenant", "acme"),
			smithyhttp.AddHeaderValue("X-Amzn-Bedrock-AgentCore-Runtime-Custom-Unlisted", "nope"),
			smithyhttp.AddHeaderValue("Cookie", "secret=1"))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Response.Close()
	if got := aws.ToString(out.TraceParent); got != traceparent {
		t.Errorf("response traceparent = %q, want it echoed", got)
	}
	var res struct{ Headers map[string]string }
	if err := json.NewDecoder(out.Response).Decode(&res); err != nil {
		t.Fatal(err)
	}
	h := res.Headers
	for name, want := range map[string]string{
		"traceparent": traceparent, "baggage": "tenant=t1", "content-type": "application/json",
		"x-amzn-bedrock-agentcore-runtime-custom-tenant": "acme",
	} {
		if h[name] != want {
			t.Errorf("agent got %s = %q, want %q", name, h[name], want)
		}
	}
	if h["x-amzn-bedrock-agentcore-runtime-session-id"] == "" || h["x-amzn-bedrock-agentcore-runtime-request-id"] == "" {
		t.Errorf("agent did not get the session and request ids: %v", h)
	}
	for _, name := range []string{"authorization", "x-amz-date", "x-amz-security-token", "cookie", "x-amzn-bedrock-agentcore-runtime-custom-unlisted"} {
		if v, ok := h[name]; ok {
			t.Errorf("agent got %s = %q; it must not", name, v)
		}
	}
}

// testLogs: a session's output can be followed live, and another session's
// output does not mix in.
func testLogs(t *testing.T, b *berth, arn string) {
	sid := sessionID("logs")
	b.mustInvoke(invokeInput{arn: arn, session: sid, body: map[string]any{"prompt": "before"}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req := must(http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.addr+"/berth/v1/logs?follow=true&stream=stdout&runtimeId="+
		runtimeIDOf(arn)+"&sessionId="+url.QueryEscape(sid), nil))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	next := func() logLine {
		var l logLine
		if err := dec.Decode(&l); err != nil {
			t.Fatalf("follow: %v", err)
		}
		return l
	}
	if l := next(); l.Text != "echo: before" {
		t.Errorf("followed history starts with %+v", l)
	}
	b.mustInvoke(invokeInput{arn: arn, session: sessionID("logs-other"), body: map[string]any{"prompt": "other"}})
	b.mustInvoke(invokeInput{arn: arn, session: sid, body: map[string]any{"prompt": "after"}})
	if l := next(); l.Text != "echo: after" || l.Session != sid {
		t.Errorf("followed line = %+v, want this session's 'echo: after'", l)
	}
}

func runtimeIDOf(arn string) string { return arn[strings.LastIndex(arn, "/")+1:] }

// testIsolation: two concurrent sessions cannot see each other's files or
// processes, and neither can reach the host's loopback (Berth's own API).
func testIsolation(t *testing.T, b *berth, arn string) {
	a, c := sessionID("iso-a"), sessionID("iso-b")
	call := func(sid string, body map[string]any) map[string]any {
		return b.mustInvoke(invokeInput{arn: arn, session: sid, body: body})
	}
	for _, path := range []string{"/tmp/secret", "secret-in-workdir"} {
		if res := call(a, map[string]any{"op": "write", "path": path, "data": "a's secret"}); res["ok"] != true {
			t.Fatalf("session a cannot write %s: %v", path, res)
		}
		if res := call(a, map[string]any{"op": "read", "path": path}); res["data"] != "a's secret" {
			t.Errorf("session a cannot read back %s: %v", path, res)
		}
		if res := call(c, map[string]any{"op": "read", "path": path}); res["error"] == nil {
			t.Errorf("session b read a's %s: %v", path, res)
		}
	}
	if res := call(a, map[string]any{"op": "write", "path": "/usr/evil", "data": "x"}); res["ok"] == true {
		t.Errorf("session a wrote to the read-only system: %v", res)
	}
	if res := call(a, map[string]any{"op": "read", "path": "/etc/shadow"}); res["error"] == nil {
		t.Errorf("session a read /etc/shadow: %v", res)
	}
	// The agent is not root on the host: its user namespace maps it away.
	if uidMap, _ := call(a, map[string]any{"op": "read", "path": "/proc/self/uid_map"})["data"].(string); len(strings.Fields(uidMap)) < 2 || strings.Fields(uidMap)[1] == "0" {
		t.Errorf("uid_map = %q, want a user namespace mapping away from host root", uidMap)
	}
	if strings.Contains(b.log(), "without a user namespace") {
		t.Error("the server ran sandboxes without a user namespace")
	}
	pa := call(a, map[string]any{"op": "ps"})["pids"].([]any)
	pb := call(c, map[string]any{"op": "ps"})["pids"].([]any)
	if len(pa) > 5 || len(pb) > 5 || intOf(pa[0]) != 1 || intOf(pb[0]) != 1 {
		t.Errorf("sessions see processes %v and %v; want only their own few, from PID 1", pa, pb)
	}
	_, portStr, _ := net.SplitHostPort(b.addr)
	port, _ := strconv.Atoi(portStr)
	if res := call(a, map[string]any{"op": "connect", "host": "127.0.0.1", "port": port}); res["ok"] == true {
		t.Errorf("session a reached Berth's API on the host's loopback: %v", res)
	}
	// Each sandbox has its own :8080, so connecting to it reaches itself.
	if res := call(c, map[string]any{"op": "connect", "host": "127.0.0.1", "port": 8080}); res["ok"] != true {
		t.Errorf("session b cannot reach its own agent: %v", res)
	}
}

// testStreaming: server-sent events reach the caller as the agent produces
// them, before the agent has finished.
func testStreaming(t *testing.T, b *berth, arn string) {
	const frames, delay = 5, 0.3
	payload, _ := json.Marshal(map[string]any{"op": "stream", "n": frames, "delay": delay})
	out, err := b.data.InvokeAgentRuntime(context.Background(), &dp.InvokeAgentRuntimeInput{
		AgentRuntimeArn: aws.String(arn), RuntimeSessionId: aws.String(sessionID("sse")), Payload: payload,
		ContentType: aws.String("application/json"), Accept: aws.String("text/event-stream")})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Response.Close()
	if ct := aws.ToString(out.ContentType); ct != "text/event-stream" {
		t.Errorf("content type = %q", ct)
	}
	sc := bufio.NewScanner(out.Response)
	var received []time.Time
	var sent []float64
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		received = append(received, time.Now())
		var f struct{ T float64 }
		if err := json.Unmarshal([]byte(line), &f); err != nil {
			t.Fatalf("frame %q: %v", line, err)
		}
		sent = append(sent, f.T)
	}
	if len(received) != frames {
		t.Fatalf("got %d frames, want %d", len(received), frames)
	}
	// The first frame arrived before the agent even wrote the last one:
	// nothing buffered the stream.
	lastSent := time.Unix(0, int64(sent[frames-1]*1e9))
	if !received[0].Before(lastSent) {
		t.Errorf("first frame arrived at %v, after the agent wrote the last at %v: the stream was buffered", received[0], lastSent)
	}
}

// testStop: StopRuntimeSession ends the session's sandbox and a stream in
// flight; the next call with the same ID starts a fresh sandbox.
func testStop(t *testing.T, b *berth, arn string) {
	sid := sessionID("stop")
	b.mustInvoke(invokeInput{arn: arn, session: sid, body: map[string]any{}})
	payload, _ := json.Marshal(map[string]any{"op": "stream", "n": 1000, "delay": 0.05})
	out, err := b.data.InvokeAgentRuntime(context.Background(), &dp.InvokeAgentRuntimeInput{
		AgentRuntimeArn: aws.String(arn), RuntimeSessionId: aws.String(sid), Payload: payload, ContentType: aws.String("application/json")})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Response.Close()
	streamDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, out.Response)
		streamDone <- err
	}()
	if _, err := b.data.StopRuntimeSession(context.Background(), &dp.StopRuntimeSessionInput{
		AgentRuntimeArn: aws.String(arn), RuntimeSessionId: aws.String(sid)}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-streamDone:
	case <-time.After(20 * time.Second):
		t.Fatal("the stream in flight did not end after StopRuntimeSession")
	}
	if b.hasSession(sid) {
		t.Error("session still listed after StopRuntimeSession")
	}
	if res := b.mustInvoke(invokeInput{arn: arn, session: sid, body: map[string]any{}}); intOf(res["count"]) != 1 {
		t.Errorf("call after stop has count %v, want 1 (a fresh sandbox)", res["count"])
	}
	if _, err := b.data.StopRuntimeSession(context.Background(), &dp.StopRuntimeSessionInput{
		AgentRuntimeArn: aws.String(arn), RuntimeSessionId: aws.String(sessionID("never-started"))}); apiErrorCode(err) != "ResourceNotFoundException" {
		t.Errorf("stopping an unknown session: %v, want ResourceNotFoundException", err)
	}
}

// testDisconnect: a caller that goes away mid-stream cancels the call to the
// agent, whose next write fails.
func testDisconnect(t *testing.T, b *berth, arn string) {
	sid := sessionID("disconnect")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	payload, _ := json.Marshal(map[string]any{"op": "stream", "n": 1000, "delay": 0.05})
	out, err := b.data.InvokeAgentRuntime(ctx, &dp.InvokeAgentRuntimeInput{
		AgentRuntimeArn: aws.String(arn), RuntimeSessionId: aws.String(sid), Payload: payload, ContentType: aws.String("application/json")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(out.Response).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	cancel()
	out.Response.Close()
	waitFor(t, 10*time.Second, "Berth to end the abandoned call", func() bool {
		for _, s := range b.sessions() {
			if s.SessionID == sid {
				return s.Inflight == 0
			}
		}
		return false
	})
	// The session itself lives on for the next call.
	if res := b.mustInvoke(invokeInput{arn: arn, session: sid, body: map[string]any{}}); intOf(res["count"]) != 2 {
		t.Errorf("call after a disconnect has count %v, want 2 (same sandbox)", res["count"])
	}
}

// testCrash: an agent that dies fails its call with RuntimeClientError; the
// next call starts a fresh sandbox.
func testCrash(t *testing.T, b *berth, arn string) {
	sid := sessionID("crash")
	b.mustInvoke(invokeInput{arn: arn, session: sid, body: map[string]any{}})
	_, err := b.invoke(invokeInput{arn: arn, session: sid, body: map[string]any{"op": "crash"}})
	if apiErrorCode(err) != "RuntimeClientError" {
		t.Fatalf("crashing call: %v, want RuntimeClientError", err)
	}
	waitFor(t, 10*time.Second, "the crashed session to end", func() bool { return !b.hasSession(sid) })
	lines := b.logs("stream=stderr&runtimeId=" + runtimeIDOf(arn) + "&sessionId=" + url.QueryEscape(sid))
	if len(lines) == 0 || lines[len(lines)-1].Text != "agent: crashing on request" {
		t.Errorf("crashed session's stderr = %+v, want its last words", lines)
	}
	if res := b.mustInvoke(invokeInput{arn: arn, session: sid, body: map[string]any{}}); intOf(res["count"]) != 1 {
		t.Errorf("call after crash has count %v, want 1", res["count"])
	}
}

// testLargePayload: a 100 MB body goes to the agent and back byte for byte,
// streamed: Berth's memory does not grow by the payload's size.
func testLargePayload(t *testing.T, b *berth, arn string) {
	payload := make([]byte, 100<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < len(payload); i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			payload[i+j] = byte(v >> (8 * j))
		}
	}
	want := sha256.Sum256(payload)
	before := peakRSS(t, b.cmd.Process.Pid)
	out, err := b.data.InvokeAgentRuntime(context.Background(), &dp.InvokeAgentRuntimeInput{
		AgentRuntimeArn: aws.String(arn), RuntimeSessionId: aws.String(sessionID("big")), Payload: payload,
		ContentType: aws.String("application/octet-stream")})
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, out.Response)
	out.Response.Close()
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(payload)) || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("got %d bytes back, checksum match %v; want the %d bytes sent", n, bytes.Equal(h.Sum(nil), want[:]), len(payload))
	}
	after := peakRSS(t, b.cmd.Process.Pid)
	t.Logf("Berth peak RSS %d MiB before, %d MiB after a 100 MB round trip", before>>20, after>>20)
	if grew := after - before; grew > 32<<20 {
		t.Errorf("Berth's peak RSS grew by %d MiB during a 100 MB round trip; the body must be streamed, not buffered", grew>>20)
	}
}

// peakRSS returns a process's peak resident set size in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/PID/status")
	return 0
}

// TestLifecycle shows idle timeout, HealthyBusy keeping a session alive,
// maximum lifetime and an agent that never becomes healthy.
func TestLifecycle(t *testing.T) {
	b := startBerth(t, "", "--ready-timeout", "3s")
	py := pythonAgent(t)
	_, arn := b.deploy("lifecycle_agent", py, deployOpts{lifecycle: &cptypes.LifecycleConfiguration{
		IdleRuntimeSessionTimeout: aws.Int32(2), MaxLifetime: aws.Int32(60)}})

	t.Run("idle", func(t *testing.T) {
		b := b.with(t)
		sid := sessionID("idle")
		b.mustInvoke(invokeInput{arn: arn, session: sid, body: map[string]any{}})
		if !b.hasSession(sid) {
			t.Fatal("session not listed after its call")
		}
		waitFor(t, 10*time.Second, "the idle session to end", func() bool { return !b.hasSession(sid) })
		if res := b.mustInvoke(invokeInput{arn: arn, session: sid, body: map[string]any{}}); intOf(res["count"]) != 1 {
			t.Errorf("call after idle end has count %v, want 1", res["count"])
		}
	})

	t.Run("busy", func(t *testing.T) {
		b := b.with(t)
		sid := sessionID("busy")
		b.mustInvoke(invokeInput{arn: arn, session: sid, body: map[string]any{"op": "busy", "seconds": 5}})
		// Past the 2 s idle timeout the agent still says HealthyBusy.
		time.Sleep(3500 * time.Millisecond)
		if !b.hasSession(sid) {
			t.Fatal("a HealthyBusy session was ended as idle")
		}
		// Once it says Healthy again, it idles out.
		waitFor(t, 15*time.Second, "the no longer busy session to end", func() bool { return !b.hasSession(sid) })
	})

	t.Run("maxLifetime", func(t *testing.T) {
		b := b.with(t)
		_, arn := b.deploy("lifetime_agent", py, deployOpts{lifecycle: &cptypes.LifecycleConfiguration{
			IdleRuntimeSessionTimeout: aws.Int32(2), MaxLifetime: aws.Int32(2)}})
		sid := sessionID("lifetime")
		b.mustInvoke(invokeInput{arn: arn, session: sid, body: map[string]any{}})
		// Busy traffic does not extend a session past its lifetime.
		waitFor(t, 10*time.Second, "the session to reach its lifetime", func() bool {
			return intOf(b.mustInvoke(invokeInput{arn: arn, session: sid, body: map[string]any{}})["count"]) == 1
		})
	})

	t.Run("neverHealthy", func(t *testing.T) {
		b := b.with(t)
		_, arn := b.deploy("unhealthy_agent", py, deployOpts{env: map[string]string{"AGENT_NEVER_HEALTHY": "1"}})
		_, err := b.invoke(invokeInput{arn: arn, session: sessionID("unhealthy"), body: map[string]any{}})
		if apiErrorCode(err) != "RuntimeClientError" || !strings.Contains(err.Error(), "initialization time exceeded") {
			t.Errorf("agent never healthy: %v, want RuntimeClientError about initialization time", err)
		}
		if n := len(b.sessions()); n > 0 {
			t.Errorf("%d sessions listed after the failed start", n)
		}
	})
}

// TestSessionQuota shows the server-wide cap on live sessions.
func TestSessionQuota(t *testing.T) {
	b := startBerth(t, "", "--max-sessions", "2")
	_, arn := b.deploy("quota_agent", goAgent(t), deployOpts{})
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			b.mustInvoke(invokeInput{arn: arn, session: sessionID("quota" + strconv.Itoa(i)), body: map[string]any{}})
		})
	}
	wg.Wait()
	_, err := b.invoke(invokeInput{arn: arn, session: sessionID("quota-third"), body: map[string]any{}})
	if apiErrorCode(err) != "ServiceQuotaExceededException" {
		t.Fatalf("third session: %v, want ServiceQuotaExceededException", err)
	}
	// Stopping one through the admin API makes room.
	s := b.sessions()[0]
	req := must(http.NewRequest(http.MethodDelete, "http://"+b.addr+"/berth/v1/sessions/"+s.RuntimeID+"/"+s.SessionID, nil))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("admin stop: %v %v", resp, err)
	}
	resp.Body.Close()
	b.mustInvoke(invokeInput{arn: arn, session: sessionID("quota-third"), body: map[string]any{}})
}
