// Package xds serves each host's view of the mesh as Envoy xDS: the
// translation from a catalog view to Envoy v3 resources, and the xDS
// server that hands them to the in-process proxy, to an Envoy a user
// brings, and to proxyless gRPC clients.
//
// Data enters as a discovery.MeshState (one consistent read of nodes,
// instances, checks, config entries, VIPs, intentions and the CA's trust
// domain). NewView indexes it once per catalog
// change; Build(view, node) is a pure function from that view and one
// client's NodeInfo to a go-control-plane snapshot whose version is the raft
// index of the read. It does no I/O and reads no clock, so it is
// golden-tested (testdata/*.golden, refreshed with -update) and fuzzed.
// Check validates a snapshot: every resource passes ValidateAll and every
// reference (EDS, RDS from filter chains and api_listeners, clusters named
// by routes and proxies) resolves.
//
// Server watches the catalog (Store.MeshState's watch set), debounces,
// rebuilds a snapshot for every connected client and sets it in a
// go-control-plane snapshot cache created with ads=false: with ads=true
// the cache never answers a client that asks for a subset of resources,
// which is what proxyless gRPC does. It serves SotW and delta ADS and the
// per-type services over a unix socket and optionally TCP, learns clients
// from stream callbacks, and tracks each client's ACKs and NACKs (a NACK is
// logged with its error detail) for /v1/vmesh/xds/clients; /config_dump
// shows every client's current snapshot.
//
// Who a client is decides what it is served: a node ID that names a
// catalog node is that host's mesh proxy and gets the outbound, inbound
// and upstream listeners and mesh endpoints (peers' mesh port, mTLS with
// SNI); any other client gets api_listeners for gRPC services and the
// instances' own addresses. See docs/xds.md.
//
// The package reads the catalog and never writes it; it does not capture
// traffic or run a proxy.
package xds
