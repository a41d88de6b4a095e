// Package httpapi serves Consul's HTTP API (agent, catalog, health, KV,
// session, txn, status, config and intention endpoints) over the catalog,
// so that consul/api, Prometheus consul_sd and consul-template work
// unchanged.
//
// Data enters as HTTP requests; reads come from the local *discovery.Store
// (blocking queries wait on its watch channels), writes leave as
// discovery.Command values through the discovery.Writer that package mesh
// wires in (raft, which forwards to the leader). The package never touches
// raft, the DNS server or the check runner directly: TTL updates go
// through TTLUpdater, cluster facts through Cluster, transactions (KV
// locks too) and session renewals through SessionCluster, a client's KV
// and session reads through RemoteKV.
//
// The Consul wire shapes of what it answers live in wire.go; what a
// client sends (ServiceRegistration, CheckType) is the catalog's own input
// shape and lives in package discovery, shared with service files.
//
// Every request is authorized by its ACL token (api_acl.go: API.ACL
// resolves it; nil turns ACLs off). Writes ask discovery.AuthorizeCommand
// in apply, the one table of write rules; the one write that bypasses the
// Writer (a TTL update, through the check runner) asks the same table
// itself. Reads filter inside their query function by Consul's read rules
// (acl_filter.go) and set X-Consul-Results-Filtered-By-ACLs; a read of one
// object the token may not read is a 403. docs/acl.md lists every route's
// rule, and a test fails when a route has no row there.
//
// Every error answer is written by one helper (writeError): a plain-text
// body and Consul's status code; bodies are read under a size limit
// (limits.go) and an oversized one is a 413 naming the limit.
package httpapi
