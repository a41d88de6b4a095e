// Package discovery owns the service catalog and the ways into it.
//
// The catalog (Store) is a go-memdb database of nodes, service instances,
// health checks and KV entries. Only the raft FSM writes it, each write at a
// raft index that becomes the object's ModifyIndex; every read returns an
// index and can add watch channels, which is how blocking queries work.
//
// The HTTP API (API) speaks Consul's agent, catalog, health, KV and status
// endpoints so that consul/api, Prometheus consul_sd and consul-template
// work unchanged. It reads the local Store and writes through the Writer
// interface, which package raft implements and package mesh wires in:
// discovery imports no other vmesh package.
//
// CheckRunner runs the local node's health checks (HTTP, TCP, gRPC, TTL) and
// writes a result through raft only when a status changes.
package discovery
