package mesh

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vmesh/vmesh/mesh/config"
	"github.com/vmesh/vmesh/telemetry"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
)

// startTracing builds the trace pipeline from telemetry { tracing } and
// the OTEL_* environment (docs/observability.md). Off, every part gets a
// nil provider and makes no spans.
func (a *Agent) startTracing(ctx context.Context) error {
	tc := a.cfg.Telemetry.Tracing
	tr, err := telemetry.NewTracing(ctx, telemetry.TracingConfig{
		Endpoint: tc.Endpoint, Protocol: tc.Protocol, SampleRatio: tc.SampleRatio,
		Insecure: tc.Insecure, CAFile: tc.CAFile, ServiceName: tc.ServiceName,
		Attributes: map[string]string{"host.name": a.cfg.NodeName, "service.instance.id": a.cfg.NodeName},
	}, nil)
	if errors.Is(err, telemetry.ErrConfig) {
		// A bad OTEL_* value is a configuration error (exit status 2).
		return &config.Error{Err: err}
	}
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	a.tracing = tr
	a.member.TracerProvider = tr.TracerProvider()
	if s := tr.Settings; s.Enabled {
		log := a.logger.With("component", "tracing")
		// The SDK's own errors (an unreachable receiver) go to our log,
		// not to stderr.
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("exporting spans", "err", err) }))
		log.Info("tracing on", "endpoint", s.Endpoint, "protocol", s.Protocol, "sampler", s.Sampler, "ratio", s.Ratio, "service", s.ServiceName)
	}
	return nil
}

// stopTracing exports the spans still buffered (for a few seconds at
// most).
func (a *Agent) stopTracing() error {
	if a.tracing == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.tracing.Shutdown(ctx); err != nil {
		a.logger.Warn("flushing spans at shutdown", "err", err)
	}
	return nil
}

// tracerProvider is what instrumented parts get: nil when tracing is off.
func (a *Agent) tracerProvider() trace.TracerProvider { return a.tracing.TracerProvider() }
