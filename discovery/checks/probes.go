package checks

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/vmesh/vmesh/discovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func (rc *checkRun) openProbe() {
	tlsConfig := &tls.Config{
		ServerName:         rc.def.TLSServerName,
		InsecureSkipVerify: rc.def.TLSSkipVerify, //nolint:gosec // the check's owner asked for it
	}
	switch rc.kind {
	case discovery.CheckHTTP:
		transport := &http.Transport{
			DialContext:           rc.r.Guard.dialer(rc.timeout).DialContext,
			TLSClientConfig:       tlsConfig,
			TLSHandshakeTimeout:   rc.timeout,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          1,
			MaxIdleConnsPerHost:   1,
			IdleConnTimeout:       90 * time.Second,
			ExpectContinueTimeout: time.Second,
		}
		rc.httpClient = &http.Client{
			Transport: transport,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	case discovery.CheckGRPC:
		target, service, _ := strings.Cut(rc.def.GRPC, "/")
		rc.grpcService = service
		creds := insecure.NewCredentials()
		if rc.def.GRPCUseTLS {
			creds = credentials.NewTLS(tlsConfig)
		}
		// Keep reconnect backoff within the interval, so that a server that
		// comes back is seen by the next run or the one after.
		maxDelay := min(rc.period, backoff.DefaultConfig.MaxDelay)
		rc.grpcConn, rc.grpcErr = grpc.NewClient(target,
			grpc.WithTransportCredentials(creds),
			grpc.WithUserAgent(checkUserAgent),
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff: backoff.Config{
					BaseDelay:  min(backoff.DefaultConfig.BaseDelay, maxDelay),
					Multiplier: backoff.DefaultConfig.Multiplier,
					Jitter:     backoff.DefaultConfig.Jitter,
					MaxDelay:   maxDelay,
				},
				MinConnectTimeout: rc.timeout,
			}),
		)
	}
}

func (rc *checkRun) closeProbe() {
	if rc.httpClient != nil {
		rc.httpClient.CloseIdleConnections()
	}
	if rc.grpcConn != nil {
		rc.grpcConn.Close()
	}
}

func (rc *checkRun) probe(ctx context.Context) checkResult {
	ctx, cancel := context.WithTimeout(ctx, rc.timeout)
	defer cancel()
	switch rc.kind {
	case discovery.CheckHTTP:
		return rc.probeHTTP(ctx)
	case discovery.CheckTCP:
		return rc.probeTCP(ctx)
	case discovery.CheckGRPC:
		return rc.probeGRPC(ctx)
	case discovery.CheckScript, discovery.CheckDocker:
		return rc.probeScript(ctx) // script.go
	}
	return checkResult{discovery.HealthCritical, "unsupported check"}
}

func (rc *checkRun) probeHTTP(ctx context.Context) checkResult {
	method := rc.def.Method
	if method == "" {
		method = http.MethodGet
	}
	var body io.Reader
	if rc.def.Body != "" {
		body = strings.NewReader(rc.def.Body)
	}
	req, err := http.NewRequestWithContext(ctx, method, rc.def.HTTP, body)
	if err != nil {
		return checkResult{discovery.HealthCritical, err.Error()}
	}
	for k, vs := range rc.def.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if host := req.Header.Get("Host"); host != "" {
		req.Host = host
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", checkUserAgent)
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", checkAccept)
	}
	resp, err := rc.httpClient.Do(req)
	if err != nil {
		return checkResult{discovery.HealthCritical, err.Error()}
	}
	defer func() {
		// Drain a bounded amount so that the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, checkDrainMax))
		resp.Body.Close()
	}()
	// Read a little more than is kept so that the cut falls on a rune
	// boundary.
	out, _ := io.ReadAll(io.LimitReader(resp.Body, int64(rc.r.outputMax())+utf8.UTFMax))
	// setObservedLocked cuts the whole line to the output limit.
	output := fmt.Sprintf("HTTP %s %s: %s Output: %s", method, rc.def.HTTP, resp.Status, out)
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode <= 299:
		return checkResult{discovery.HealthPassing, output}
	case resp.StatusCode == http.StatusTooManyRequests:
		return checkResult{discovery.HealthWarning, output}
	}
	return checkResult{discovery.HealthCritical, output}
}

func (rc *checkRun) probeTCP(ctx context.Context) checkResult {
	conn, err := rc.r.Guard.dialer(0).DialContext(ctx, "tcp", rc.def.TCP)
	if err != nil {
		return checkResult{discovery.HealthCritical, err.Error()}
	}
	conn.Close()
	return checkResult{discovery.HealthPassing, fmt.Sprintf("TCP connect %s: Success", rc.def.TCP)}
}

func (rc *checkRun) probeGRPC(ctx context.Context) checkResult {
	if rc.grpcErr != nil {
		return checkResult{discovery.HealthCritical, fmt.Sprintf("gRPC check %s: failed: %v", rc.def.GRPC, rc.grpcErr)}
	}
	if rc.grpcConn.GetState() == connectivity.TransientFailure {
		rc.grpcConn.ResetConnectBackoff()
	}
	resp, err := healthpb.NewHealthClient(rc.grpcConn).Check(ctx,
		&healthpb.HealthCheckRequest{Service: rc.grpcService})
	if err != nil {
		return checkResult{discovery.HealthCritical, fmt.Sprintf("gRPC check %s: failed: %v", rc.def.GRPC, err)}
	}
	if st := resp.GetStatus(); st != healthpb.HealthCheckResponse_SERVING {
		return checkResult{discovery.HealthCritical, fmt.Sprintf("gRPC check %s: failed: status %s", rc.def.GRPC, st)}
	}
	return checkResult{discovery.HealthPassing, fmt.Sprintf("gRPC check %s: success", rc.def.GRPC)}
}

// capOutput cuts s to at most max bytes, on a rune boundary, ending in a
// note that it was cut, as Consul's check_output_max_size does. (An HTTP
// body is read only up to the limit, so the note does not say how long
// it was.)
func capOutput(s string, max int) string {
	if len(s) <= max {
		return s
	}
	note := fmt.Sprintf(" ... (output cut to %d bytes)", max)
	i := max - len(note)
	if i < 0 {
		i, note = max, ""
	}
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + note
}
