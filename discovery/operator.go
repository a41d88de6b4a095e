package discovery

import "time"

// The shapes of Consul's /v1/operator/raft and /v1/operator/autopilot
// answers, filled by the raft servers and rendered by the HTTP API.

// RaftServer is one server of the raft configuration.
type RaftServer struct {
	ID              string
	Node            string
	Address         string
	Leader          bool
	ProtocolVersion string
	Voter           bool
	LastIndex       uint64
}

// RaftConfiguration is the raft configuration and the index it was read
// at.
type RaftConfiguration struct {
	Servers []RaftServer
	Index   uint64
}

// AutopilotServer is one server as the leader's autopilot sees it.
type AutopilotServer struct {
	ID          string
	Name        string
	Address     string
	NodeStatus  string
	Version     string
	LastContact time.Duration
	LastTerm    uint64
	LastIndex   uint64
	Healthy     bool
	StableSince time.Time
	Status      string // leader, voter, non-voter, staging
	Leader      bool
	Voter       bool
}

// AutopilotState is the leader's autopilot state.
type AutopilotState struct {
	Healthy                    bool
	FailureTolerance           int
	OptimisticFailureTolerance int
	Leader                     string
	Voters                     []string
	Servers                    []AutopilotServer
}
