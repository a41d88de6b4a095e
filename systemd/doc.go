// Package systemd connects vmesh to systemd: the sd_notify protocol
// (READY, STATUS, RELOADING, STOPPING, WATCHDOG), the watchdog loop, the
// vmesh.service unit and the steps of `vmesh install` and `vmesh uninstall`.
//
// Data enters through a Reporter, which asks a Service when it is ready,
// what its status line is and whether it is healthy, and is told of
// reloads and the stop (package mesh implements Service for the agent;
// this package owns the protocol's order: READY before RELOADING, nothing
// after STOPPING) and as options for Unit and the installer. It leaves as
// datagrams on $NOTIFY_SOCKET, the text of the unit file, and files and
// commands on the host.
//
// It must not know about raft, the catalog or the agent's configuration
// format: the agent passes its health and status through Service and the
// default config file's text to the installer. Privileged side effects sit
// behind small interfaces (Notifier, Runner) with fakes for tests.
package systemd
