// Package mesh is vmesh's composition root: the Agent lifecycle (Start
// brings raft, the catalog, the HTTP API, DNS, xDS, the in-process proxy,
// capture and service files up in order; Close takes them down in reverse
// and tolerates a partial start) and Main, which runs the CLI with the
// agent command added.
//
// It is the only package that wires others together. It must not parse
// configuration (package config does) or implement CLI commands other than
// `agent` (package cli does); cli must never import it.
//
// Data enters as a config.Config built from flags and files (or from
// tests), and through the HTTP API and raft once running; it leaves as the
// API's answers, the xDS the proxies take, DNS answers, the kernel's
// capture rules and the banner on the agent's output.
package mesh
