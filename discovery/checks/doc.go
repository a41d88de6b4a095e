// Package checks runs the local node's health checks (HTTP, TCP, gRPC and
// TTL) and reports a result only when a check's status changes, so a
// steady service costs no raft writes.
//
// Data enters as Runner.Sync (the node's checks as the catalog holds them,
// called by package mesh whenever its replica changes) and UpdateTTL (the
// HTTP API's /v1/agent/check/pass|warn|fail); it leaves through the Sink,
// which package mesh implements as raft writes. The runner never reads or
// writes the catalog itself and never imports raft: the catalog's view
// comes back in through Sync, which is how it notices changes made by
// someone else.
//
// runner.go holds the set of running checks, run.go one check's state
// machine (last known vs observed status, TTL expiry, deregistration of a
// service critical for too long), probes.go the probes of each kind.
package checks
