package systemd

import (
	"fmt"
	"strings"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier tells the service manager about the agent's state. The agent
// holds one; tests pass a Recorder.
type Notifier interface {
	// Ready reports that startup (or a reload) is complete; status, when
	// not empty, is sent as STATUS= in the same datagram.
	Ready(status string) error
	// Reloading reports that the agent started reloading its
	// configuration; Ready must follow.
	Reloading() error
	// Stopping reports that the agent is shutting down.
	Stopping() error
	// Status sets the one-line status shown by `systemctl status`.
	Status(status string) error
	// Watchdog keeps the service manager's watchdog from firing.
	Watchdog() error
}

// NewNotifier returns the Notifier that writes to $NOTIFY_SOCKET. When the
// variable is unset (not started by systemd, or Type= is not notify) every
// call is a no-op.
func NewNotifier() Notifier { return socketNotifier{} }

type socketNotifier struct{}

func (socketNotifier) Ready(status string) error {
	return send(daemon.SdNotifyReady, statusLine(status))
}

// Reloading carries MONOTONIC_USEC, which systemd 253 and later require
// with RELOADING=1 for Type=notify-reload; older versions ignore it.
func (socketNotifier) Reloading() error {
	return send(daemon.SdNotifyReloading, strings.TrimSuffix(daemon.SdNotifyMonotonicUsec(), "\n"), statusLine("reloading configuration"))
}

func (socketNotifier) Stopping() error {
	return send(daemon.SdNotifyStopping, statusLine("stopping"))
}

func (socketNotifier) Status(status string) error { return send(statusLine(status)) }

func (socketNotifier) Watchdog() error { return send(daemon.SdNotifyWatchdog) }

// statusLine is one STATUS= assignment; a newline would end it early and
// start a new, bogus, assignment.
func statusLine(s string) string {
	if s == "" {
		return ""
	}
	return "STATUS=" + strings.Join(strings.Fields(s), " ")
}

// send writes the non-empty assignments as one datagram.
func send(lines ...string) error {
	var kept []string
	for _, l := range lines {
		if l != "" {
			kept = append(kept, l)
		}
	}
	msg := strings.Join(kept, "\n")
	if _, err := daemon.SdNotify(false, msg); err != nil {
		return fmt.Errorf("systemd: sending %q: %w", msg, err)
	}
	return nil
}
