// Package mesh is vmesh's composition root: it owns the agent's
// configuration (DefaultConfig, HCL/JSON files, flags, Validate), the Agent
// lifecycle (Start brings raft, the catalog, the HTTP API, health checks and
// service files up in order; Close takes them down in reverse) and the CLI
// commands.
//
// It is the only package that wires others together. CLI commands talk to
// a running agent through its HTTP API and never open raft files.
package mesh
