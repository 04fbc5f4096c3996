package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	dp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcore"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape reads Berth's /metrics.
func (b *berth) scrape() map[string]*dto.MetricFamily {
	b.t.Helper()
	resp, err := http.Get("http://" + b.addr + "/metrics")
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return families
}

// metricValue returns the value of the sample of family whose labels include
// want (a counter's or gauge's value, a histogram's count), summed over
// matches, and how many samples matched.
func metricValue(families map[string]*dto.MetricFamily, family string, want map[string]string) (float64, int) {
	f := families[family]
	if f == nil {
		return 0, 0
	}
	var sum float64
	n := 0
next:
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		n++
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum, n
}

// TestMetrics runs a scripted workload and checks that /metrics moved as it
// should.
func TestMetrics(t *testing.T) {
	b := startBerth(t, "")
	id, arn := b.deploy("metrics_agent", goAgent(t), deployOpts{})
	a, c := sessionID("m-a"), sessionID("m-b")
	for range 3 {
		b.mustInvoke(invokeInput{arn: arn, session: a, body: map[string]any{"prompt": "hello"}})
	}
	b.mustInvoke(invokeInput{arn: arn, session: c, body: map[string]any{}})
	if _, err := b.invoke(invokeInput{arn: arn, session: c, body: map[string]any{"op": "crash"}}); apiErrorCode(err) != "RuntimeClientError" {
		t.Fatalf("crash: %v", err)
	}
	waitFor(t, 10*time.Second, "the crashed session to end", func() bool { return !b.hasSession(c) })

	m := b.scrape()
	rt := map[string]string{"runtime": id}
	check := func(family string, labels map[string]string, want float64) {
		t.Helper()
		all := map[string]string{}
		for k, v := range rt {
			all[k] = v
		}
		for k, v := range labels {
			all[k] = v
		}
		if got, _ := metricValue(m, family, all); got != want {
			t.Errorf("%s%v = %v, want %v", family, all, got, want)
		}
	}
	check("berth_session_starts_total", map[string]string{"source": "cold"}, 2)
	check("berth_session_ends_total", map[string]string{"reason": "crashed"}, 1)
	check("berth_sessions_live", nil, 1)
	check("berth_invocations_total", map[string]string{"endpoint": "DEFAULT", "code": "200"}, 4)
	check("berth_invocations_total", map[string]string{"code": "424"}, 1)
	check("berth_invocation_duration_seconds", nil, 5)
	check("berth_session_cold_start_seconds", map[string]string{"phase": "total"}, 2)
	if mem, n := metricValue(m, "berth_sandbox_memory_bytes", map[string]string{"runtime": id, "session": a}); n != 1 || mem < 1<<20 {
		t.Errorf("sandbox memory of the live session = %v (%d samples), want its usage", mem, n)
	}
	if in, _ := metricValue(m, "berth_invocation_bytes_total", map[string]string{"runtime": id, "direction": "in"}); in < 50 {
		t.Errorf("bytes in = %v", in)
	}

	if _, err := b.data.StopRuntimeSession(context.Background(), &dp.StopRuntimeSessionInput{
		AgentRuntimeArn: aws.String(arn), RuntimeSessionId: aws.String(a)}); err != nil {
		t.Fatal(err)
	}
	m = b.scrape()
	check("berth_session_ends_total", map[string]string{"reason": "stopped"}, 1)
	check("berth_sessions_live", nil, 0)
}
