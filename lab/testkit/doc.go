// Package testkit is vmesh's test basement: the helpers every package's
// tests share, so each exists once.
//
//   - WaitFor polls a condition until it holds (tests wait on conditions,
//     never on fixed sleeps).
//   - FreePort finds a TCP port free on one or more loopback addresses.
//   - Logger gives a component a slog.Logger that writes to t.Log and goes
//     quiet once the test ends (raft and gRPC loops may still log then).
//   - HTTPDo, GetJSON and WriteFile send a request, read an agent's JSON
//     (with its X-Consul-Index) and write a fixture file, failing the test
//     on error; SyncBuffer collects a process's output for a test to read.
//   - NetNS creates network namespaces that are removed when the test ends,
//     and RequireRoot skips a test that needs root with a clear reason.
//
// It imports nothing of vmesh, so any package's tests may use it; no
// non-test code may import it.
package testkit
