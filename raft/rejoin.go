package raft

import (
	"context"
	"errors"
	"net"
	"time"

	hraft "github.com/hashicorp/raft"
)

// A server that was away long enough for autopilot to remove it (a
// reboot, a crash, a day switched off) comes back with its identity and
// its raft state, but the cluster's configuration no longer names it: no
// one answers its votes and no leader replicates to it. rejoinLoop notices
// and asks the leader to add it again, with its node certificate, as a
// new joiner's AddSelf does. A node that left never gets here: its agent
// does not open raft again, and Leave sets leaving first.

// Rejoin timing: how long without a leader (or outside the configuration)
// before this server asks to be added, and the back-off between tries.
const (
	rejoinAfter      = 3 * time.Second
	rejoinMinBackoff = time.Second
	rejoinMaxBackoff = 30 * time.Second
	rejoinCallWait   = 10 * time.Second
)

func (s *Server) rejoinLoop() {
	defer s.wg.Done()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	var lostSince, next time.Time
	backoff := rejoinMinBackoff
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		leader, _ := s.raft.LeaderWithID()
		if s.leaving.Load() || s.IsLeader() || (leader != "" && s.InConfiguration()) {
			lostSince, next, backoff = time.Time{}, time.Time{}, rejoinMinBackoff
			continue
		}
		now := time.Now()
		if lostSince.IsZero() {
			lostSince = now
		}
		if now.Sub(lostSince) < rejoinAfter || now.Before(next) {
			continue
		}
		err := s.rejoin()
		if err == nil {
			// Give the leader time to replicate before looking again.
			next, backoff = now.Add(rejoinAfter), rejoinMinBackoff
			continue
		}
		s.logger.Warn("not in the cluster's configuration and could not rejoin yet; retrying", "err", err, "retry_in", backoff)
		next = now.Add(backoff)
		backoff = min(2*backoff, rejoinMaxBackoff)
	}
}

// rejoin tries AddSelf through every peer this server knows of.
func (s *Server) rejoin() error {
	peers := s.rejoinPeers()
	if len(peers) == 0 {
		return errors.New("no peer known from the stored raft configuration or the catalog")
	}
	var last error
	for _, p := range peers {
		ctx, cancel := context.WithTimeout(context.Background(), rejoinCallWait)
		go func() {
			select {
			case <-s.done:
				cancel()
			case <-ctx.Done():
			}
		}()
		voter, err := s.AddSelf(ctx, p)
		cancel()
		if err == nil {
			if !s.InConfiguration() {
				s.logger.Info("rejoined the cluster: this server had been removed from its configuration while away", "via", p, "voter", voter)
			}
			return nil
		}
		last = err
		if errors.Is(err, ErrPermissionDenied) {
			return err // every leader gives the same verdict
		}
	}
	return last
}

// rejoinPeers are the cluster addresses of the other servers in the
// stored configuration, then of the catalog's nodes (at this server's
// cluster port, the cluster's usual layout).
func (s *Server) rejoinPeers() []string {
	self := s.Addr()
	seen := map[string]bool{self: true}
	var out []string
	add := func(a string) {
		if a != "" && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	if f := s.raft.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			if string(srv.ID) != s.nodeID {
				add(string(srv.Address))
			}
		}
	}
	_, port, err := net.SplitHostPort(self)
	if _, nodes, nerr := s.store.Nodes(nil); err == nil && nerr == nil {
		for _, n := range nodes {
			if n.ID != s.nodeID && n.Address != "" {
				add(net.JoinHostPort(n.Address, port))
			}
		}
	}
	return out
}

// InConfiguration reports whether this server is in the latest raft
// configuration it knows. A server that autopilot removed while it was
// up is not; one removed while it was down still sees its old
// configuration, but then knows no leader.
func (s *Server) InConfiguration() bool {
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, srv := range f.Configuration().Servers {
		if srv.ID == hraft.ServerID(s.nodeID) {
			return true
		}
	}
	return false
}
