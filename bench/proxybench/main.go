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
