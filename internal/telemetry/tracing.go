package telemetry

import (
	"context"
	"fmt"
	"os"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// TracingEnabled reports whether the standard OpenTelemetry environment asks
// for traces to be exported: an OTLP endpoint is set and OTEL_TRACES_EXPORTER
// is not "none".
func TracingEnabled() bool {
	if os.Getenv("OTEL_TRACES_EXPORTER") == "none" || os.Getenv("OTEL_SDK_DISABLED") == "true" {
		return false
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// NewTracer returns a tracer that exports spans over OTLP/HTTP, configured
// by the standard OTEL_* environment variables (endpoint, headers, timeout,
// OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES), and a function that flushes
// and stops it. When TracingEnabled is false it returns a nil tracer, which
// every caller takes to mean "do not trace": tracing off costs nothing.
func NewTracer(ctx context.Context) (trace.Tracer, func(context.Context) error, error) {
	if !TracingEnabled() {
		return nil, func(context.Context) error { return nil }, nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attribute.String("service.name", "berth")))
	if err != nil {
		return nil, nil, fmt.Errorf("trace resource: %w", err)
	}
	// The environment's OTEL_SERVICE_NAME, read by resource.Default, wins.
	res, err = resource.Merge(res, resource.Environment())
	if err != nil {
		return nil, nil, fmt.Errorf("trace resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return tp.Tracer("github.com/berthrun/berth"), tp.Shutdown, nil
}
