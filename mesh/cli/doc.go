// Package cli is vmesh's command line: one file per command, each a
// Command with its own flag set, Run, Synopsis and Help, and Run, which
// dispatches os.Args, prints help and maps outcomes to exit codes
// (0 ok, 1 failed, 2 usage or configuration).
//
// Commands reach an agent only through its HTTP API (--http-addr,
// VMESH_HTTP_ADDR), with the ACL token of -token, -token-file or the
// environment on every request (api.go: apiClient.do is the one place a
// request is built). The acl commands use package acl's shapes and check
// tokens, policies and rules as the agent will before sending them. The
// package must not import mesh (the agent command is handed in by
// mesh.Main through Run's extra commands) nor raft: a command never opens
// raft files. install, redirect and proxy run local
// things (systemd, iptables, the data plane) because they must work
// without an agent.
//
// Data enters as argv, files named on it (config, service and config
// entry files, read with package config; service files are checked with
// local.BuildFileServices, as the agent checks them, and -rules @FILE),
// the ACL token (flags, files, the environment through Env.Getenv) and
// the agent's HTTP answers; it leaves on Env.Stdout (results, help) and
// Env.Stderr (errors, warnings), and as the exit code.
package cli
