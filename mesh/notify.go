package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/vmesh/vmesh/systemd"
)

// statusInterval is how often the STATUS= line is refreshed (it is sent
// only when it changed).
const statusInterval = 5 * time.Second

// sdNotifier tells systemd about the agent's lifecycle (sd_notify): READY=1
// once the agent serves, STATUS= lines, RELOADING=1 and READY=1 around a
// SIGHUP reload, STOPPING=1 on shutdown, and WATCHDOG=1 while healthy.
// Without NOTIFY_SOCKET (not under systemd) every message is a no-op.
type sdNotifier struct {
	a      *Agent
	n      systemd.Notifier
	logger *slog.Logger
	client *http.Client

	mu         sync.Mutex
	ready      bool // the first READY=1 went out
	stopping   bool
	lastStatus string
	reloadErr  error

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startNotify starts reporting to systemd ($NOTIFY_SOCKET, with the
// watchdog interval from $WATCHDOG_USEC); call it once Start returned.
func startNotify(a *Agent, logger *slog.Logger) *sdNotifier {
	logger = logger.With("component", "systemd")
	interval, err := systemd.WatchdogInterval()
	if err != nil {
		logger.Warn("not sending watchdog pings", "err", err)
	}
	return startNotifyWith(a, systemd.NewNotifier(), interval, logger)
}

// startNotifyWith reports to n and pings its watchdog every interval/2
// (never when interval is 0).
func startNotifyWith(a *Agent, n systemd.Notifier, interval time.Duration, logger *slog.Logger) *sdNotifier {
	ctx, cancel := context.WithCancel(context.Background())
	s := &sdNotifier{
		a: a, n: n, logger: logger, cancel: cancel,
		client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.run(ctx)
	}()
	go func() {
		defer s.wg.Done()
		systemd.RunWatchdog(ctx, s.n, interval, s.healthy, logger)
	}()
	return s
}

// run sends READY=1 once the agent serves, then keeps STATUS= current.
//
// Everything Start starts (raft, the HTTP API, and what later issues add
// there: xDS, capture) is up once it returned. A node in a cluster is
// ready once it has a leader and is registered in the catalog, so that
// units ordered after vmesh.service find a working mesh. A node in no
// cluster yet is ready at once: it waits for 'vmesh join', which may never
// come while systemd holds its start.
func (s *sdNotifier) run(ctx context.Context) {
	if s.a.ref.get() != nil {
		select {
		case <-s.a.ready:
		case <-ctx.Done():
			return
		}
	}
	s.mu.Lock()
	if !s.stopping {
		s.ready = true
		s.lastStatus = s.status()
		s.check("READY=1", s.n.Ready(s.lastStatus))
		s.logger.Info("told systemd the agent is ready", "status", s.lastStatus)
	}
	s.mu.Unlock()

	t := time.NewTicker(statusInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		if st := s.status(); st != s.lastStatus && !s.stopping {
			s.lastStatus = st
			s.check("STATUS=", s.n.Status(st))
		}
		s.mu.Unlock()
	}
}

// status is the line `systemctl status vmesh` shows.
func (s *sdNotifier) status() string {
	var st string
	if srv := s.a.ref.get(); srv == nil {
		st = "not in a cluster: waiting for 'vmesh join ADDR -token T'"
	} else {
		services := "? services"
		if _, svcs, err := s.a.store.ServiceTags(nil); err == nil && len(svcs) == 1 {
			services = "1 service"
		} else if err == nil {
			services = fmt.Sprintf("%d services", len(svcs))
		}
		if leader, _ := srv.Leader(); leader != "" {
			st = fmt.Sprintf("leader %s, %s", leader, services)
		} else {
			st = "no raft leader, " + services
		}
	}
	if s.reloadErr != nil {
		st += "; last reload failed: " + s.reloadErr.Error()
	}
	return st
}

// reloading is called when a SIGHUP reload begins. Before the first
// READY=1 it sends nothing: that READY=1 is still to come.
func (s *sdNotifier) reloading() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ready && !s.stopping {
		s.check("RELOADING=1", s.n.Reloading())
	}
}

// reloaded ends a reload with READY=1; a failed reload keeps the running
// configuration, and the STATUS= line says so.
func (s *sdNotifier) reloaded(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reloadErr = err
	if s.ready && !s.stopping {
		s.lastStatus = s.status()
		s.check("READY=1", s.n.Ready(s.lastStatus))
	}
}

// stop sends STOPPING=1 and ends the notifier's loops; call it before
// Agent.Close. It may be called again.
func (s *sdNotifier) stop() {
	s.mu.Lock()
	if !s.stopping {
		s.stopping = true
		s.check("STOPPING=1", s.n.Stopping())
	}
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	s.client.CloseIdleConnections()
}

func (s *sdNotifier) check(what string, err error) {
	if err != nil {
		s.logger.Warn("telling systemd "+what, "err", err)
	}
}

// healthy is the watchdog's test that the agent's main loops are alive:
// the HTTP API answers, and raft, when this node is in a cluster, is not
// shut down.
func (s *sdNotifier) healthy(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+dialable(s.a.HTTPAddr())+"/v1/status/leader", nil)
	if err != nil {
		return err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("HTTP API: %w", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP API: GET /v1/status/leader: %s", resp.Status)
	}
	if srv := s.a.ref.get(); srv != nil && srv.Stats()["state"] == "Shutdown" {
		return errors.New("raft is shut down")
	}
	return nil
}

// dialable turns a wildcard listen address into one a client can dial.
func dialable(addr string) string {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().IsUnspecified() {
		return addr
	}
	lo := netip.MustParseAddr("127.0.0.1")
	if ap.Addr().Is6() {
		lo = netip.IPv6Loopback()
	}
	return net.JoinHostPort(lo.String(), fmt.Sprint(ap.Port()))
}
