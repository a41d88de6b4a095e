// Package systemd connects vmesh to systemd: the sd_notify protocol
// (READY, STATUS, RELOADING, STOPPING, WATCHDOG), the watchdog loop, the
// vmesh.service unit and the steps of `vmesh install` and `vmesh uninstall`.
//
// Data enters as calls on a Notifier (the agent's lifecycle in package mesh
// decides when it is ready, reloading or stopping; this package only speaks
// the protocol) and as options for Unit and the installer. It leaves as
// datagrams on $NOTIFY_SOCKET, the text of the unit file, and files and
// commands on the host.
//
// It must not know about raft, the catalog or the agent's configuration
// format: the agent passes a health function to the watchdog and the
// default config file's text to the installer. Privileged side effects sit
// behind small interfaces (Notifier, Runner) with fakes for tests.
package systemd
