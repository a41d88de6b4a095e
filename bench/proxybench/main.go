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

import (
	"fmt"
	"os"
)

const usage = `usage: proxybench COMMAND [flags]

  xds    -addr HOST:PORT -node NAME -route LISTEN=BACKEND/PROTO ...
         serve xDS until SIGINT/SIGTERM (PROTO: tcp, http, grpc)
  certs  -dir DIR
         write ca.pem, hop1.pem/hop1-key.pem (client), hop2.pem/hop2-key.pem
         (server), and hop1-bundle.pem/hop2-bundle.pem (cert+key, HAProxy)
  report -in FILE [-l7]
         print the tables of docs/BENCHMARKS.md from the script's results
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "xds":
		err = runXDS(args)
	case "certs":
		err = runCerts(args)
	case "report":
		err = runReport(args, os.Stdout)
	default:
		fmt.Fprintf(os.Stderr, "proxybench: unknown command %q\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "proxybench %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
