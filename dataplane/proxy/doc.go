// Package proxy is the in-process proxy. It learns its whole configuration
// from one xDS stream (ADS, state of the world) and imports nothing of
// vmesh but xDS types, so Envoy can replace it and `vmesh proxy` can run it
// as its own process.
//
// Data in: listeners and clusters (wildcard), then the endpoints, SDS
// secrets and route configurations (RDS) they name. Each response is
// parsed field by field — a field the proxy does not honour is refused,
// never ignored — then resolved with everything accepted so far into one
// snapshot, which replaces the served one in a single atomic store and is
// ACKed. A resource it cannot honour is NACKed with an error naming the
// resource and the field and keeps its previously accepted version, while
// the valid resources of the same response are applied, as Envoy does. A
// listener or cluster whose secrets, endpoints or route configuration
// have not arrived keeps its previous version (Envoy's warming).
//
// Data out: connections. A connection over the global or its listener's
// limit is reset as it is accepted (limits.go). Filter chains are chosen
// by destination (original_dst), SNI and transport (tls_inspector); TLS
// is terminated with a client certificate checked against the mesh
// roots, and network RBAC decides on the peer's SPIFFE ID. A chain ending
// in a tcp_proxy splices the connection to an endpoint of its cluster
// (conn.go); one ending in an http_connection_manager serves HTTP/1.1 or
// HTTP/2 on it (http_serve.go), read through the edge (edge.go: HTTP/2
// rapid reset and CONTINUATION floods cut with GOAWAY, ambiguous HTTP/1
// framing refused), and routes every request on its own with the
// snapshot current when it arrives: path normalization (path.go), HTTP
// RBAC, virtual hosts and routes (route.go), then retries, timeouts and
// circuit breakers toward the endpoints over pooled connections
// (http_stream.go, http_upstream.go), gRPC and WebSocket included:
// HTTP/1.1 through the proxy's own transport, which writes and reads on
// the request's goroutine and keeps idle connections without a
// goroutine (http1_transport.go), HTTP/2 through net/http's. Endpoints are picked and ejected by the traffic policy
// (policy.go) and dialed over mTLS when the endpoint is a peer's mesh
// port (dial.go), whose certificate must name the identity the cluster
// expects (peer.go). Each request, TCP connection and refused
// connection may leave an access log line (Envoy's access loggers, in
// buffered sinks that never block a request), and each refused one a
// rate-limited warn line (accesslog.go).
//
// It must not look at the catalog, nor keep state that a snapshot swap
// would leave stale: per-request decisions read the current snapshot;
// what outlives snapshots (breaker counts, outlier state, pooled upstream
// connections, a listener's life for draining) is keyed by name or
// address and carried from one snapshot to the next. UDP and API
// listeners are refused; see docs/proxy.md.
package proxy
