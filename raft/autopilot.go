package raft

import (
	"context"
	"sort"
	"sync"
	"time"

	hraft "github.com/hashicorp/raft"
	autopilot "github.com/hashicorp/raft-autopilot"
	"github.com/vmesh/vmesh/discovery"
)

// Autopilot keeps the voter set healthy on the leader: it removes servers
// that stopped heartbeating (after the node TTL) and, through the capped
// promoter, promotes healthy nonvoters until there are Voters voters.

func newAutopilot(s *Server) *autopilot.Autopilot {
	return autopilot.New(s.raft, &apDelegate{s: s},
		autopilot.WithLogger(newHCLog(s.logger).Named("autopilot")),
		autopilot.WithPromoter(&cappedPromoter{max: s.cluster.cfg.Voters}),
		autopilot.WithUpdateInterval(time.Second),
		autopilot.WithReconcileInterval(2*time.Second),
	)
}

type apDelegate struct{ s *Server }

// AutopilotConfig is the configuration stored in the catalog (or the
// default): autopilot asks on every pass, so a change an operator makes
// takes effect at the next one, on whichever server leads.
func (d *apDelegate) AutopilotConfig() *autopilot.Config {
	c := discovery.DefaultAutopilotConfig()
	if d.s != nil { // a bare delegate (tests) runs with the default
		if _, stored, err := d.s.store.Autopilot(nil); err == nil {
			c = stored
		}
	}
	return &autopilot.Config{
		CleanupDeadServers:      c.CleanupDeadServers,
		LastContactThreshold:    c.LastContactThreshold,
		MaxTrailingLogs:         c.MaxTrailingLogs,
		MinQuorum:               c.MinQuorum,
		ServerStabilizationTime: c.ServerStabilizationTime,
	}
}

func (d *apDelegate) NotifyState(*autopilot.State) {}

// FetchServerStats asks every server for its raft progress over the
// cluster RPC, concurrently, within autopilot's context.
func (d *apDelegate) FetchServerStats(ctx context.Context, servers map[hraft.ServerID]*autopilot.Server) map[hraft.ServerID]*autopilot.ServerStats {
	s := d.s
	out := map[hraft.ServerID]*autopilot.ServerStats{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for id, srv := range servers {
		if srv.NodeStatus != autopilot.NodeAlive {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var st *StatsResponse
			if string(id) == s.nodeID {
				st = s.localStats()
			} else {
				var resp StatsResponse
				cctx, cancel := context.WithTimeout(ctx, time.Second)
				err := s.cluster.clients.call(cctx, string(srv.Address), "Stats", &Empty{}, &resp)
				cancel()
				if err != nil {
					return
				}
				st = &resp
			}
			lc := time.Duration(st.LastContact) * time.Millisecond
			if st.LastContact < 0 {
				lc = time.Hour
			}
			mu.Lock()
			out[id] = &autopilot.ServerStats{LastContact: lc, LastTerm: st.LastTerm, LastIndex: st.LastIndex}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// KnownServers is every server in the raft configuration, alive when its
// node heartbeated within the TTL.
func (d *apDelegate) KnownServers() map[hraft.ServerID]*autopilot.Server {
	s := d.s
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	now := time.Now()
	out := map[hraft.ServerID]*autopilot.Server{}
	for _, srv := range f.Configuration().Servers {
		status := autopilot.NodeAlive
		if string(srv.ID) != s.nodeID && !s.serverAlive(string(srv.ID), now) {
			status = autopilot.NodeFailed
		}
		out[srv.ID] = &autopilot.Server{
			ID: srv.ID, Name: string(srv.ID), Address: srv.Address, NodeStatus: status,
			Version: "1", RaftVersion: 3, IsLeader: string(srv.ID) == s.nodeID, NodeType: autopilot.NodeVoter,
		}
	}
	return out
}

// RemoveFailedServer takes a dead server out of raft. Its catalog node
// stays (critical) until it is reaped, so operators still see it.
func (d *apDelegate) RemoveFailedServer(srv *autopilot.Server) {
	s := d.s
	if err := s.raft.RemoveServer(srv.ID, 0, 10*time.Second).Error(); err != nil {
		s.logger.Warn("autopilot: removing a failed server", "id", srv.ID, "err", err)
		return
	}
	s.logger.Info("autopilot: removed a failed server from raft", "id", srv.ID, "addr", srv.Address)
}

// cappedPromoter promotes healthy, stable nonvoters while there are fewer
// than max voters, and demotes the newest voters beyond max.
type cappedPromoter struct{ max int }

func (p *cappedPromoter) GetServerExt(*autopilot.Config, *autopilot.ServerState) interface{} {
	return nil
}
func (p *cappedPromoter) GetStateExt(*autopilot.Config, *autopilot.State) interface{} { return nil }

func (p *cappedPromoter) GetNodeTypes(_ *autopilot.Config, st *autopilot.State) map[hraft.ServerID]autopilot.NodeType {
	out := map[hraft.ServerID]autopilot.NodeType{}
	for id := range st.Servers {
		out[id] = autopilot.NodeVoter
	}
	return out
}

func (p *cappedPromoter) CalculatePromotionsAndDemotions(conf *autopilot.Config, st *autopilot.State) autopilot.RaftChanges {
	var changes autopilot.RaftChanges
	now := time.Now()
	var voters, candidates []*autopilot.ServerState
	for _, srv := range st.Servers {
		switch {
		case srv.HasVotingRights():
			voters = append(voters, srv)
		case srv.Server.NodeStatus == autopilot.NodeAlive && srv.Health.IsStable(now, conf.ServerStabilizationTime):
			candidates = append(candidates, srv)
		}
	}
	sort.Slice(candidates, func(i, j int) bool { return candidates[i].Server.ID < candidates[j].Server.ID })
	for i := 0; len(voters)+i < p.max && i < len(candidates); i++ {
		changes.Promotions = append(changes.Promotions, candidates[i].Server.ID)
	}
	if extra := len(voters) - p.max; extra > 0 {
		sort.Slice(voters, func(i, j int) bool { return voters[i].Server.ID > voters[j].Server.ID })
		for _, v := range voters {
			if extra == 0 {
				break
			}
			if v.State != autopilot.RaftLeader {
				changes.Demotions = append(changes.Demotions, v.Server.ID)
				extra--
			}
		}
	}
	return changes
}

func (p *cappedPromoter) FilterFailedServerRemovals(_ *autopilot.Config, _ *autopilot.State, f *autopilot.FailedServers) *autopilot.FailedServers {
	return f
}

func (p *cappedPromoter) IsPotentialVoter(autopilot.NodeType) bool { return true }
