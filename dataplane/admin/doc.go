// Package admin is the agent's admin listener: Envoy's admin endpoints
// (/ready, /server_info, /listeners, /clusters, /stats,
// /stats/prometheus, /config_dump, /logging) over what the in-process
// proxy applied, so the tools and habits made for Envoy's admin port work
// on vmesh's.
//
// Data in: the proxy's introspection (dataplane/proxy: State, Listeners,
// Clusters, ConfigDump), a Prometheus gatherer, the log level and the
// build. Data out: HTTP answers only. It keeps no state of its own and
// must not change the proxy: the one mutating endpoint, /logging, changes
// the log level and nothing else.
//
// Who may call it is decided by where it listens (loopback by default,
// docs/security.md) and by the checks in guard: no secret leaves through
// it (config dumps are redacted by the proxy), mutations are POST-only and
// refuse browser cross-site requests, and a Host header that is a name
// other than localhost or this host's is refused (DNS rebinding).
package admin
