package raft

import (
	"slices"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"
	autopilot "github.com/hashicorp/raft-autopilot"
)

// apServer describes one server of an autopilot.State for the promoter.
type apServer struct {
	id     string
	state  autopilot.RaftState
	failed bool          // NodeStatus failed instead of alive
	sick   bool          // Health.Healthy false
	stable time.Duration // how long it has been healthy (StableSince = now - stable)
}

func apState(now time.Time, servers ...apServer) *autopilot.State {
	st := &autopilot.State{Servers: map[hraft.ServerID]*autopilot.ServerState{}}
	for _, s := range servers {
		status := autopilot.NodeAlive
		if s.failed {
			status = autopilot.NodeFailed
		}
		id := hraft.ServerID(s.id)
		st.Servers[id] = &autopilot.ServerState{
			Server: autopilot.Server{
				ID: id, Name: s.id, Address: hraft.ServerAddress(s.id + ":7400"), NodeStatus: status,
				IsLeader: s.state == autopilot.RaftLeader, NodeType: autopilot.NodeVoter,
			},
			State:  s.state,
			Health: autopilot.ServerHealth{Healthy: !s.sick, StableSince: now.Add(-s.stable)},
		}
		if s.state == autopilot.RaftLeader {
			st.Leader = id
		}
		if s.state == autopilot.RaftLeader || s.state == autopilot.RaftVoter {
			st.Voters = append(st.Voters, id)
		}
	}
	return st
}

func TestCappedPromoter(t *testing.T) {
	const (
		leader   = autopilot.RaftLeader
		voter    = autopilot.RaftVoter
		nonvoter = autopilot.RaftNonVoter
	)
	// The configuration autopilot runs with: 3 s of stability.
	conf := (&apDelegate{}).AutopilotConfig()
	long := 10 * conf.ServerStabilizationTime
	short := conf.ServerStabilizationTime / 3

	for _, tc := range []struct {
		name    string
		max     int
		servers []apServer
		promote []string // in order
		demote  int      // how many; which ones is checked by rules below
	}{
		{
			name:    "a lone leader, max 3: the two lowest IDs are promoted",
			max:     3,
			servers: []apServer{{id: "n1", state: leader}, {id: "n4", state: nonvoter, stable: long}, {id: "n2", state: nonvoter, stable: long}, {id: "n3", state: nonvoter, stable: long}},
			promote: []string{"n2", "n3"},
		},
		{
			name:    "one voter short, max 3",
			max:     3,
			servers: []apServer{{id: "b", state: leader}, {id: "c", state: voter}, {id: "e", state: nonvoter, stable: long}, {id: "d", state: nonvoter, stable: long}, {id: "a", state: nonvoter, stable: long}},
			promote: []string{"a"},
		},
		{
			name:    "max 5 with 3 voters promotes two",
			max:     5,
			servers: []apServer{{id: "n1", state: leader}, {id: "n2", state: voter}, {id: "n3", state: voter}, {id: "n6", state: nonvoter, stable: long}, {id: "n5", state: nonvoter, stable: long}, {id: "n4", state: nonvoter, stable: long}},
			promote: []string{"n4", "n5"},
		},
		{
			name:    "fewer candidates than free seats: all of them",
			max:     5,
			servers: []apServer{{id: "n1", state: leader}, {id: "n2", state: nonvoter, stable: long}},
			promote: []string{"n2"},
		},
		{
			name: "unstable, unhealthy and failed nonvoters are passed over",
			max:  3,
			servers: []apServer{
				{id: "n1", state: leader},
				{id: "n2", state: nonvoter, stable: short},              // healthy, not long enough
				{id: "n3", state: nonvoter, stable: long, sick: true},   // unhealthy
				{id: "n4", state: nonvoter, stable: long, failed: true}, // agent stopped heartbeating
				{id: "n5", state: nonvoter, stable: long},
			},
			promote: []string{"n5"},
		},
		{
			name: "no eligible nonvoter: no change",
			max:  3,
			servers: []apServer{
				{id: "n1", state: leader},
				{id: "n2", state: nonvoter, stable: short},
				{id: "n3", state: nonvoter, stable: long, failed: true},
				{id: "n4", state: nonvoter, stable: long, sick: true},
			},
		},
		{
			name:    "exactly max voters: no change",
			max:     3,
			servers: []apServer{{id: "n1", state: leader}, {id: "n2", state: voter}, {id: "n3", state: voter}, {id: "n4", state: nonvoter, stable: long}, {id: "n5", state: nonvoter, stable: long}},
		},
		{
			name:    "max 1, a lone leader: no change",
			max:     1,
			servers: []apServer{{id: "n1", state: leader}, {id: "n2", state: nonvoter, stable: long}},
		},
		{
			name:    "one voter too many",
			max:     3,
			servers: []apServer{{id: "n1", state: leader}, {id: "n2", state: voter}, {id: "n3", state: voter}, {id: "n4", state: voter}},
			demote:  1,
		},
		{
			name:    "two too many, the leader has the highest ID",
			max:     3,
			servers: []apServer{{id: "n9", state: leader}, {id: "n2", state: voter}, {id: "n3", state: voter}, {id: "n4", state: voter}, {id: "n5", state: voter}},
			demote:  2,
		},
		{
			name:    "too many voters and stable nonvoters: demote, never promote",
			max:     1,
			servers: []apServer{{id: "n1", state: voter}, {id: "n2", state: leader}, {id: "n3", state: nonvoter, stable: long}},
			demote:  1,
		},
		{
			name:    "cap lowered to 1 in a cluster of 5 voters",
			max:     1,
			servers: []apServer{{id: "n1", state: voter}, {id: "n2", state: voter}, {id: "n3", state: leader}, {id: "n4", state: voter}, {id: "n5", state: voter}},
			demote:  4,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := apState(time.Now(), tc.servers...)
			p := &cappedPromoter{max: tc.max}
			got := p.CalculatePromotionsAndDemotions(conf, st)

			var promoted []string
			for _, id := range got.Promotions {
				promoted = append(promoted, string(id))
			}
			if !slices.Equal(promoted, tc.promote) {
				t.Errorf("promotions = %v; want %v", promoted, tc.promote)
			}
			if len(got.Demotions) != tc.demote {
				t.Errorf("demotions = %v; want %d of them", got.Demotions, tc.demote)
			}
			seen := map[hraft.ServerID]bool{}
			for _, id := range got.Demotions {
				srv := st.Servers[id]
				switch {
				case srv == nil:
					t.Errorf("demoted %s, which is not a server", id)
				case srv.State == autopilot.RaftLeader:
					t.Errorf("demoted the leader %s", id)
				case srv.State != autopilot.RaftVoter:
					t.Errorf("demoted %s, which is a %s", id, srv.State)
				case seen[id]:
					t.Errorf("demoted %s twice", id)
				}
				seen[id] = true
			}
			if got.Leader != "" {
				t.Errorf("asked for a leadership transfer to %q; the promoter never should", got.Leader)
			}
			// Map order must not change the answer.
			for range 20 {
				again := p.CalculatePromotionsAndDemotions(conf, st)
				if !slices.Equal(again.Promotions, got.Promotions) || !slices.Equal(again.Demotions, got.Demotions) {
					t.Fatalf("a second call gave %+v after %+v", again, got)
				}
			}
		})
	}
}

// TestCappedPromoterStabilization: a nonvoter becomes eligible exactly when
// it has been healthy for ServerStabilizationTime.
func TestCappedPromoterStabilization(t *testing.T) {
	conf := &autopilot.Config{ServerStabilizationTime: 3 * time.Second}
	p := &cappedPromoter{max: 3}
	for _, tc := range []struct {
		stable time.Duration
		want   bool
	}{
		{0, false},
		{2 * time.Second, false},
		{4 * time.Second, true},
		{time.Hour, true},
	} {
		st := apState(time.Now(), apServer{id: "n1", state: autopilot.RaftLeader}, apServer{id: "n2", state: autopilot.RaftNonVoter, stable: tc.stable})
		got := len(p.CalculatePromotionsAndDemotions(conf, st).Promotions) == 1
		if got != tc.want {
			t.Errorf("healthy for %s: promoted = %v; want %v", tc.stable, got, tc.want)
		}
	}
}
