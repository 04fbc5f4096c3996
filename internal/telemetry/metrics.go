package telemetry

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are Berth's Prometheus metrics, in a registry of their own.
type Metrics struct {
	reg            *prometheus.Registry
	sessionStarts  *prometheus.CounterVec
	sessionEnds    *prometheus.CounterVec
	coldStart      *prometheus.HistogramVec
	invocations    *prometheus.CounterVec
	invokeDuration *prometheus.HistogramVec
	bytes          *prometheus.CounterVec
}

// NewMetrics returns Berth's metrics, with Go runtime and process metrics.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		sessionStarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_session_starts_total",
			Help: "Sessions started, by runtime and by whether a warm sandbox served them.",
		}, []string{"runtime", "source"}),
		sessionEnds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_session_ends_total",
			Help: "Sessions ended, by runtime and reason (idle, lifetime, stopped, crashed, shutdown).",
		}, []string{"runtime", "reason"}),
		coldStart: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "berth_session_cold_start_seconds",
			Help:    "Time from a new session's first call to its agent answering /ping, by phase: sandbox (creating it) and ready (the agent starting).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"runtime", "phase"}),
		invocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_invocations_total",
			Help: "InvokeAgentRuntime calls, by runtime, endpoint and HTTP status.",
		}, []string{"runtime", "endpoint", "code"}),
		invokeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "berth_invocation_duration_seconds",
			Help:    "InvokeAgentRuntime call duration, to the end of the answer, by runtime and endpoint.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 12),
		}, []string{"runtime", "endpoint"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_invocation_bytes_total",
			Help: "Payload bytes of InvokeAgentRuntime calls, by runtime and direction (in: to the agent, out: to the caller).",
		}, []string{"runtime", "direction"}),
	}
	m.reg.MustRegister(m.sessionStarts, m.sessionEnds, m.coldStart, m.invocations, m.invokeDuration, m.bytes,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in Prometheus's exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// SessionStarted records a session's start; sandbox and ready are the cold
// start's phases (zero for a session served by a warm sandbox).
func (m *Metrics) SessionStarted(runtimeID string, warm bool, sandbox, ready time.Duration) {
	if warm {
		m.sessionStarts.WithLabelValues(runtimeID, "warm").Inc()
		return
	}
	m.sessionStarts.WithLabelValues(runtimeID, "cold").Inc()
	m.coldStart.WithLabelValues(runtimeID, "sandbox").Observe(sandbox.Seconds())
	m.coldStart.WithLabelValues(runtimeID, "ready").Observe(ready.Seconds())
	m.coldStart.WithLabelValues(runtimeID, "total").Observe((sandbox + ready).Seconds())
}

// SessionEnded records a session's end.
func (m *Metrics) SessionEnded(runtimeID, reason string) {
	m.sessionEnds.WithLabelValues(runtimeID, reason).Inc()
}

// Invoked records one InvokeAgentRuntime call.
func (m *Metrics) Invoked(runtimeID, endpoint string, code int, d time.Duration, in, out int64) {
	m.invocations.WithLabelValues(runtimeID, endpoint, strconv.Itoa(code)).Inc()
	m.invokeDuration.WithLabelValues(runtimeID, endpoint).Observe(d.Seconds())
	m.bytes.WithLabelValues(runtimeID, "in").Add(float64(in))
	m.bytes.WithLabelValues(runtimeID, "out").Add(float64(out))
}

// SessionSample is one live session's state, as a gauge source sees it.
type SessionSample struct {
	RuntimeID   string
	SessionID   string
	MemoryBytes int64
	CPUSeconds  float64
}

// PoolSample is one warm pool's state.
type PoolSample struct {
	RuntimeID       string
	Version         int
	Ready, Starting int
}

// ObserveSessions reports the live sessions and warm pools that sessions
// and pools return, each time the metrics are scraped.
func (m *Metrics) ObserveSessions(sessions func() []SessionSample, pools func() []PoolSample) {
	m.reg.MustRegister(&liveCollector{sessions: sessions, pools: pools})
}

var (
	liveDesc = prometheus.NewDesc("berth_sessions_live", "Live sessions, by runtime.", []string{"runtime"}, nil)
	memDesc  = prometheus.NewDesc("berth_sandbox_memory_bytes", "Memory in use by a session's sandbox.", []string{"runtime", "session"}, nil)
	cpuDesc  = prometheus.NewDesc("berth_sandbox_cpu_seconds_total", "CPU time used by a session's sandbox.", []string{"runtime", "session"}, nil)
	poolDesc = prometheus.NewDesc("berth_warm_pool_sandboxes", "Warm sandboxes, by runtime, version and state (ready, starting).", []string{"runtime", "version", "state"}, nil)
)

// liveCollector turns snapshots into gauges at scrape time, so nothing is
// computed between scrapes.
type liveCollector struct {
	sessions func() []SessionSample
	pools    func() []PoolSample
}

func (c *liveCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- liveDesc
	ch <- memDesc
	ch <- cpuDesc
	ch <- poolDesc
}

func (c *liveCollector) Collect(ch chan<- prometheus.Metric) {
	live := map[string]int{}
	for _, s := range c.sessions() {
		live[s.RuntimeID]++
		ch <- prometheus.MustNewConstMetric(memDesc, prometheus.GaugeValue, float64(s.MemoryBytes), s.RuntimeID, s.SessionID)
		ch <- prometheus.MustNewConstMetric(cpuDesc, prometheus.CounterValue, s.CPUSeconds, s.RuntimeID, s.SessionID)
	}
	for rt, n := range live {
		ch <- prometheus.MustNewConstMetric(liveDesc, prometheus.GaugeValue, float64(n), rt)
	}
	for _, p := range c.pools() {
		v := strconv.Itoa(p.Version)
		ch <- prometheus.MustNewConstMetric(poolDesc, prometheus.GaugeValue, float64(p.Ready), p.RuntimeID, v, "ready")
		ch <- prometheus.MustNewConstMetric(poolDesc, prometheus.GaugeValue, float64(p.Starting), p.RuntimeID, v, "starting")
	}
}
