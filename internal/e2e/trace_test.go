package e2e

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	dp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcore"
	collector "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is a minimal OTLP/HTTP trace receiver on loopback.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []*tracepb.Span
	srv   *http.Server
	addr  string
}

func startOTLPReceiver(t *testing.T) *otlpReceiver {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &otlpReceiver{addr: ln.Addr().String()}
	r.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(req.Body)
			if err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			body = zr
		}
		data, _ := io.ReadAll(body)
		var export collector.ExportTraceServiceRequest
		if req.URL.Path != "/v1/traces" || proto.Unmarshal(data, &export) != nil {
			http.Error(w, "bad export", 400)
			return
		}
		r.mu.Lock()
		for _, rs := range export.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				r.spans = append(r.spans, ss.Spans...)
			}
		}
		r.mu.Unlock()
		out, _ := proto.Marshal(&collector.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
	})}
	go r.srv.Serve(ln)
	t.Cleanup(func() { r.srv.Close() })
	return r
}

func (r *otlpReceiver) byName() map[string]*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]*tracepb.Span{}
	for _, s := range r.spans {
		out[s.Name] = s
	}
	return out
}

// TestTracing checks the span tree of an invocation that cold-starts a
// session, exported over OTLP, and that the agent's request carries the
// trace context of the proxying span.
func TestTracing(t *testing.T) {
	recv := startOTLPReceiver(t)
	b := startBerthEnv(t, "", []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + recv.addr, "OTEL_BSP_SCHEDULE_DELAY=50"})
	_, arn := b.deploy("traced_agent", goAgent(t), deployOpts{})

	const traceID, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	payload, _ := json.Marshal(map[string]any{"op": "headers"})
	out, err := b.data.InvokeAgentRuntime(context.Background(), &dp.InvokeAgentRuntimeInput{
		AgentRuntimeArn: aws.String(arn), RuntimeSessionId: aws.String(sessionID("traced")), Payload: payload,
		ContentType: aws.String("application/json"), TraceParent: aws.String("00-" + traceID + "-" + callerSpan + "-01")})
	if err != nil {
		t.Fatal(err)
	}
	var res struct{ Headers map[string]string }
	err = json.NewDecoder(out.Response).Decode(&res)
	out.Response.Close()
	if err != nil {
		t.Fatal(err)
	}

	want := []string{"InvokeAgentRuntime", "resolve endpoint", "acquire session", "sandbox.create", "agent.ready", "proxy to agent"}
	var spans map[string]*tracepb.Span
	waitFor(t, 10*time.Second, "the spans to be exported", func() bool {
		spans = recv.byName()
		for _, name := range want {
			if spans[name] == nil {
				return false
			}
		}
		return true
	})
	id := func(b []byte) string { return hex.EncodeToString(b) }
	parentOf := map[string]string{
		"InvokeAgentRuntime": callerSpan,
		"resolve endpoint":   id(spans["InvokeAgentRuntime"].SpanId),
		"acquire session":    id(spans["InvokeAgentRuntime"].SpanId),
		"proxy to agent":     id(spans["InvokeAgentRuntime"].SpanId),
		"sandbox.create":     id(spans["acquire session"].SpanId),
		"agent.ready":        id(spans["acquire session"].SpanId),
	}
	for name, parent := range parentOf {
		s := spans[name]
		if id(s.TraceId) != traceID || id(s.ParentSpanId) != parent {
			t.Errorf("span %q: trace %s parent %s; want trace %s parent %s", name, id(s.TraceId), id(s.ParentSpanId), traceID, parent)
		}
	}
	// The agent was called as a child of the proxy span.
	wantParent := "00-" + traceID + "-" + id(spans["proxy to agent"].SpanId) + "-01"
	if got := res.Headers["traceparent"]; got != wantParent {
		t.Errorf("agent's traceparent = %q, want %q", got, wantParent)
	}
	if !strings.HasPrefix(res.Headers["traceparent"], "00-"+traceID) {
		t.Error("the agent's request is not in the caller's trace")
	}
}
