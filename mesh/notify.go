package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"
)

// sdService is the agent as systemd's reporter sees it (systemd.Service):
// READY=1, the STATUS= line and the watchdog's health test.
type sdService struct {
	a      *Agent
	client *http.Client
}

func newSDService(a *Agent) sdService {
	return sdService{a: a, client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}}
}

// Ready is closed once the agent serves. Everything Start starts is up
// once it returned. A node in a cluster is ready once it has a leader and
// is registered in the catalog, so that units ordered after vmesh.service
// find a working mesh. A node in no cluster yet is ready at once (nil): it
// waits for 'vmesh join', which may never come while systemd holds its
// start.
func (s sdService) Ready() <-chan struct{} {
	if !s.a.member.InCluster() {
		return nil
	}
	return s.a.local.Ready()
}

// Status is the line `systemctl status vmesh` shows.
func (s sdService) Status() string {
	var st string
	if c := s.a.member.Client(); c != nil {
		st = fmt.Sprintf("client: replica at index %d, last heard a server %s ago", c.Replica().LastIndex(), c.LastContact().Round(time.Millisecond))
	} else if srv := s.a.member.Server(); srv == nil {
		st = "not in a cluster: waiting for 'vmesh join ADDR'"
	} else {
		services := "? services"
		if _, svcs, err := s.a.store.ServiceTags(nil); err == nil && len(svcs) == 1 {
			services = "1 service"
		} else if err == nil {
			services = fmt.Sprintf("%d services", len(svcs))
		}
		if leader, _ := srv.Leader(); leader != "" {
			st = fmt.Sprintf("leader %s, %s", leader, services)
		} else if !srv.InConfiguration() {
			st = "not in the cluster's raft configuration: rejoining, " + services
		} else {
			st = "no raft leader, " + services
		}
	}
	return st
}

// Healthy is the watchdog's test that the agent's main loops are alive:
// the HTTP API answers, and raft, when this node is in a cluster, is not
// shut down.
func (s sdService) Healthy(ctx context.Context) error {
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
	if srv := s.a.member.Server(); srv != nil && srv.Stats()["state"] == "Shutdown" {
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
