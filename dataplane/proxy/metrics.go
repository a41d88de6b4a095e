package proxy

import "time"

// Metrics receives the proxy's measurements. A nil *Metrics records
// nothing, so every call site may use it unconditionally.
//
// Labels (Prometheus names in the style of Istio/Linkerd, docs/proxy.md):
// listener is the xDS listener's name; stat is the stat_prefix of the
// filter that served the traffic ("inbound_orders", "outbound_orders",
// "upstream_orders"), from which the direction and the service are read;
// upstream is the cluster the traffic went to ("" when none was picked).
//
// TODO(metrics helper): back these with prometheus/client_golang.
type Metrics struct{}

// RequestDone counts one HTTP request (gRPC calls included) and observes
// its latency, from the request's arrival to the end of the response.
// code is the HTTP status sent downstream (a local reply's too).
func (m *Metrics) RequestDone(listener, stat, upstream string, code int, d time.Duration) {}

// ConnOpened and ConnClosed track a listener's active downstream
// connections.
func (m *Metrics) ConnOpened(listener string) {}

// ConnClosed: see ConnOpened.
func (m *Metrics) ConnClosed(listener string) {}

// Bytes adds the bytes received from (in) and sent to (out) the
// downstream of a connection or request.
func (m *Metrics) Bytes(listener, stat, upstream string, in, out int64) {}

// TLSHandshakeFailed counts a failed TLS handshake: side "downstream"
// (a client of listener name) or "upstream" (the proxy dialing an
// endpoint of cluster name).
func (m *Metrics) TLSHandshakeFailed(side, name string) {}

// XDSUpdate counts an accepted xDS response of type typeURL; XDSNack a
// rejected one.
func (m *Metrics) XDSUpdate(typeURL string) {}

// XDSNack: see XDSUpdate.
func (m *Metrics) XDSNack(typeURL string) {}
