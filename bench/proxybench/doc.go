// Command proxybench is the Go side of bench/proxy.sh, the proxy
// benchmark (vmesh against direct, nginx and HAProxy; see
// docs/BENCHMARKS.md, section "Proxy"):
//
//   - xds: a minimal xDS server (go-control-plane's snapshot cache) that
//     gives a standalone `vmesh proxy` fixed plaintext listeners, each to
//     one static cluster: the benchmark's "one vmesh hop";
//   - certs: a CA and the two certificates the nginx and HAProxy hops
//     present to each other (mutual TLS, ECDSA P-256 like vmesh's);
//   - report: the results the script collected, as medians, latency
//     added over the direct path, and ratios to nginx and HAProxy.
//
// The traffic (the backend, HTTP and gRPC load with fortio, TCP
// throughput) comes from ./loadgen, a module of its own so that fortio
// stays out of vmesh's go.mod. Nothing here is imported by vmesh.
package main
