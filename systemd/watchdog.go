package systemd

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// WatchdogInterval is the watchdog timeout systemd set for this process
// (WatchdogSec= in the unit, passed as WATCHDOG_USEC), or 0 when there is
// none. The environment is left as it is.
func WatchdogInterval() (time.Duration, error) {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0, fmt.Errorf("systemd: reading the watchdog interval: %w", err)
	}
	return d, nil
}

// RunWatchdog sends WATCHDOG=1 every interval/2, as sd_watchdog_enabled(3)
// advises, until ctx ends, but only when healthy returns nil: a stuck agent
// whose process is alive must still be restarted, which is the point of
// the watchdog. Each health check gets at most interval/2.
//
// It does nothing when interval is 0 (no watchdog configured).
func RunWatchdog(ctx context.Context, n Notifier, interval time.Duration, healthy func(context.Context) error, logger *slog.Logger) {
	if interval <= 0 {
		return
	}
	period := interval / 2
	t := time.NewTicker(period)
	defer t.Stop()
	wasHealthy := true
	for {
		hctx, cancel := context.WithTimeout(ctx, period)
		err := healthy(hctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil && wasHealthy:
			logger.Warn("unhealthy: not sending WATCHDOG=1; systemd restarts the agent if this lasts", "err", err, "watchdog", interval)
		case err == nil && !wasHealthy:
			logger.Info("healthy again: sending WATCHDOG=1")
		}
		wasHealthy = err == nil
		if err == nil {
			if err := n.Watchdog(); err != nil {
				logger.Warn("sending WATCHDOG=1", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
