// Package proxy is the in-process proxy. It learns its whole configuration
// from one xDS stream (ADS, state of the world) and imports nothing of
// vmesh but xDS types, so Envoy can replace it and `vmesh proxy` can run it
// as its own process.
//
// Data in: listeners and clusters (wildcard), then the endpoints and SDS
// secrets they name. Each response is parsed field by field — a field the
// proxy does not honour is refused, never ignored — then resolved with
// everything accepted so far into one snapshot, which replaces the served
// one in a single atomic store and is ACKed; anything it cannot honour is
// NACKed with an error naming the resource and the field, and the previous
// snapshot keeps serving. A listener or cluster whose secrets or endpoints
// have not arrived keeps its previous version (Envoy's warming).
//
// Data out: TCP connections. Listeners whose filter chains end in a
// tcp_proxy are served: filter chains chosen by destination (original_dst),
// SNI and transport (tls_inspector), TLS terminated with a client
// certificate checked against the mesh roots, network RBAC on the peer's
// SPIFFE ID, and the cluster's endpoints reached by round robin, over mTLS
// when the endpoint is a peer's mesh port. L7 (HTTP connection managers),
// UDP and API listeners are refused for now; see docs/proxy.md.
package proxy
