package raft

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/discovery"
)

// DefaultVIPRange is where service VIPs come from unless configured: the
// reserved 240.0.0.0/4 ("future use"), which no real host is reached at.
var DefaultVIPRange = netip.MustParsePrefix("240.0.0.0/4")

// ErrVIPRangeExhausted: every address of the VIP range is taken.
var ErrVIPRangeExhausted = errors.New("raft: VIP range exhausted")

// firstVIP and lastVIP bound the usable addresses of a range: a range
// wider than /31 leaves out its network and broadcast addresses, which
// some stacks treat specially.
func firstVIP(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr()
	if p.Bits() < 31 {
		a = a.Next()
	}
	return a
}

func lastVIP(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := (uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])) | host
	if p.Bits() < 31 {
		v--
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// nextVIP returns the lowest address of p at or after from that is not
// used. Lowest-first keeps allocation predictable (the first service of a
// cluster gets 240.0.0.1) and the taken part of the range compact.
func nextVIP(p netip.Prefix, used map[netip.Addr]bool, from netip.Addr) (netip.Addr, error) {
	if !p.IsValid() || !p.Addr().Is4() {
		return netip.Addr{}, fmt.Errorf("raft: VIP range %s is not an IPv4 prefix", p)
	}
	a, last := firstVIP(p), lastVIP(p)
	if from.IsValid() && from.Compare(a) > 0 {
		a = from
	}
	for ; a.IsValid() && a.Compare(last) <= 0; a = a.Next() {
		if !used[a] {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%w: every address of %s is taken", ErrVIPRangeExhausted, p)
}

// allocateVIPs gives every service in the catalog that has no VIP one
// from p, through raft. It only ever adds: a service keeps its VIP for as
// long as the allocation exists, so no address is reused while its service
// is around (VIPs of services that are gone are not freed yet; the range
// is large). ws, if set, watches the services and the allocations.
func (s *Server) allocateVIPs(ctx context.Context, ws memdb.WatchSet, p netip.Prefix) (int, error) {
	_, names, err := s.store.ServiceNames(ws)
	if err != nil {
		return 0, err
	}
	_, vips, err := s.store.VIPs(ws)
	if err != nil {
		return 0, err
	}
	has := make(map[string]bool, len(vips))
	used := make(map[netip.Addr]bool, len(vips))
	for _, v := range vips {
		has[strings.ToLower(v.Service)] = true
		if a, err := netip.ParseAddr(v.IP); err == nil {
			used[a] = true
		}
	}
	n := 0
	var cursor netip.Addr
	for _, name := range names {
		if has[strings.ToLower(name)] || name == discovery.ServerServiceName {
			continue // the servers' own service is not a mesh service
		}
		a, err := nextVIP(p, used, cursor)
		if err != nil {
			return n, fmt.Errorf("allocating a VIP for %s: %w", name, err)
		}
		if _, err := s.applyCmd(ctx, discovery.VIPRequest{Op: discovery.VIPAllocate, Service: name, IP: a.String()}); err != nil {
			return n, fmt.Errorf("allocating a VIP for %s: %w", name, err)
		}
		used[a], cursor = true, a
		n++
		s.logger.Info("allocated a service VIP", "service", name, "vip", a.String())
	}
	return n, nil
}

// vipLoop runs on the leader: it allocates VIPs whenever a service
// appears. An exhausted range waits for the next catalog change; other
// failures (a write that timed out) retry with a backoff.
func (s *Server) vipLoop(ctx context.Context, p netip.Prefix) {
	backoff := time.Duration(0)
	lastErr := ""
	for {
		ws := memdb.NewWatchSet()
		_, err := s.allocateVIPs(ctx, ws, p)
		if ctx.Err() != nil {
			return
		}
		var retry <-chan time.Time
		switch {
		case err == nil:
			backoff, lastErr = 0, ""
		case errors.Is(err, ErrVIPRangeExhausted):
			if err.Error() != lastErr {
				s.logger.Error("no VIP for a new service; widen capture.vip_range", "err", err)
			}
			lastErr = err.Error()
		default:
			backoff = min(max(2*backoff, 100*time.Millisecond), 10*time.Second)
			s.logger.Warn("allocating service VIPs", "err", err, "retry_in", backoff)
			retry = time.After(backoff)
		}
		wctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-retry:
				cancel()
			case <-wctx.Done():
			}
		}()
		_ = ws.WatchCtx(wctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
	}
}

// startVIPs runs vipLoop until ctx ends; the returned func waits for it.
func (s *Server) startVIPs(ctx context.Context) (wait func()) {
	p := DefaultVIPRange
	if s.cluster != nil && s.cluster.cfg.VIPRange.IsValid() {
		p = s.cluster.cfg.VIPRange
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.vipLoop(ctx, p)
	}()
	return func() { <-done }
}
