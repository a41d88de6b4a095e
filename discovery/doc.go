// Package discovery owns the service catalog: what the mesh knows about
// nodes, services, checks, intentions, config entries, VIPs, KV, and the
// sessions that hold KV locks (session.go; transactions in txn.go).
//
// The catalog (Store) is a go-memdb database of nodes, service instances,
// health checks and KV entries. Only the raft FSM writes it, each write at a
// raft index that becomes the object's ModifyIndex; every read returns an
// index and can add watch channels, which is how blocking queries work.
//
// Intentions (source -> destination allow/deny, Consul's precedence) are a
// catalog table too; IntentionDecision is the one definition of what they
// decide, which the data plane's RBAC must match.
//
// ServiceRegistration and CheckType are the one input shape of a service
// and its checks, whether it comes from the HTTP API or a service file;
// Build validates one into the RegisterServiceRequest the catalog stores
// (discovery/local does so for a node's service files), with the
// connect-proxy record that describes the node proxy as the service's
// sidecar when it asks for one (sidecar.go).
//
// The root holds the catalog only and imports no other vmesh package, nor
// miekg/dns or net/http: its consumers (raft, the xDS builder) link just
// the store. The ways into it are sub-packages that import the root:
// discovery/httpapi (Consul's HTTP API), discovery/dns (the DNS server),
// discovery/checks (the health-check runner) and discovery/local (the
// agent's own node and file services). Writes come in only as
// Commands applied by the raft FSM.
package discovery
