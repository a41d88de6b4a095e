// Package discovery owns the service catalog and the ways into it.
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
// The HTTP API (API) speaks Consul's agent, catalog, health, KV, status,
// config and intention endpoints so that consul/api, Prometheus consul_sd and consul-template
// work unchanged. It reads the local Store and writes through the Writer
// interface, which package raft implements and package mesh wires in:
// discovery imports no other vmesh package.
//
// DNSServer answers `<svc>.mesh`, `<svc>.virtual.consul` (VIPs, which the
// raft leader allocates into the VIP table), `<svc>.service.consul` and
// `<node>.node.consul` from the local Store, and forwards other names to
// recursors.
//
// CheckRunner runs the local node's health checks (HTTP, TCP, gRPC, TTL) and
// writes a result through raft only when a status changes.
package discovery
