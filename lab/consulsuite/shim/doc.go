//go:build linux

// Command shim is a `consul` executable for HashiCorp's sdk/testutil: it
// answers `consul version -format=json` and turns `consul agent
// -config-file FILE` (testutil's JSON config) into a vmesh config file
// next to it, then execs `$VMESH_BIN agent -config` on that file, so the
// consul/api module's own tests run against vmesh. main.go's table says
// which of testutil's keys it maps and why it ignores the others.
//
// It must not import vmesh: it drives the built binary, as an operator
// would. It binds nothing itself; the agent listens only on the ports
// testutil allocated (never vmesh's defaults).
package main
