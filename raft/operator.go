package raft

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"time"

	hraft "github.com/hashicorp/raft"
	autopilot "github.com/hashicorp/raft-autopilot"
	"github.com/vmesh/vmesh/discovery"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Consul's operator endpoints on a server: the raft configuration,
// removing a peer, handing over leadership, autopilot's state, and
// snapshots an operator saves and restores (archive.go).

// ErrUnknownPeer: no server of the raft configuration has the ID or
// address asked for.
var ErrUnknownPeer = errors.New("raft: no such server in the raft configuration")

// RaftConfiguration is the raft configuration as Consul's
// /v1/operator/raft/configuration shows it, the node names from the
// catalog.
func (s *Server) RaftConfiguration() (discovery.RaftConfiguration, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return discovery.RaftConfiguration{}, fmt.Errorf("reading raft configuration: %w", err)
	}
	_, leaderID := s.raft.LeaderWithID()
	names := s.nodeNamesByID()
	out := discovery.RaftConfiguration{Index: f.Index(), Servers: []discovery.RaftServer{}}
	for _, srv := range f.Configuration().Servers {
		out.Servers = append(out.Servers, discovery.RaftServer{
			ID: string(srv.ID), Node: names[string(srv.ID)], Address: string(srv.Address),
			Leader: srv.ID == leaderID, Voter: srv.Suffrage == hraft.Voter, ProtocolVersion: "3",
		})
	}
	return out, nil
}

func (s *Server) rpcRaftConfiguration(ctx context.Context, _ *Empty) (*discovery.RaftConfiguration, error) {
	if _, err := s.peerNode(ctx); err != nil {
		return nil, err
	}
	if !s.IsLeader() {
		return nil, s.notLeader(ctx)
	}
	conf, err := s.RaftConfiguration()
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &conf, nil
}

// RaftConfiguration is the leader's raft configuration, for a client
// agent's API (reads only: a client changes no server and takes no
// snapshot, which holds every secret).
func (c *Client) RaftConfiguration(ctx context.Context) (discovery.RaftConfiguration, error) {
	var resp discovery.RaftConfiguration
	err := c.leaderCall(ctx, "RaftConfiguration", &Empty{}, &resp, true)
	return resp, err
}

// AutopilotState is the leader's autopilot state, for a client agent's
// API.
func (c *Client) AutopilotState(ctx context.Context) (*discovery.AutopilotState, error) {
	var resp discovery.AutopilotState
	if err := c.leaderCall(ctx, "AutopilotState", &Empty{}, &resp, true); err != nil {
		return nil, err
	}
	return &resp, nil
}

// nodeNamesByID maps the catalog's node IDs to their names.
func (s *Server) nodeNamesByID() map[string]string {
	_, nodes, _ := s.store.Nodes(nil)
	out := make(map[string]string, len(nodes))
	for _, n := range nodes {
		if n.ID != "" {
			out[n.ID] = n.Name
		}
	}
	return out
}

// PeerNode names the node of the raft server with id or address (one of
// them set), for RemoveNode: removing a raft peer is removing its node,
// certificates revoked, as 'vmesh force-leave' does.
func (s *Server) PeerNode(id, address string) (string, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return "", fmt.Errorf("reading raft configuration: %w", err)
	}
	for _, srv := range f.Configuration().Servers {
		if (id != "" && string(srv.ID) == id) || (id == "" && string(srv.Address) == address) {
			if name := s.nodeNamesByID()[string(srv.ID)]; name != "" {
				return name, nil
			}
			return "", fmt.Errorf("%w: server %s (%s) has no node in the catalog; remove it with peers.json recovery", ErrUnknownPeer, srv.ID, srv.Address)
		}
	}
	if id != "" {
		return "", fmt.Errorf("%w: id %q", ErrUnknownPeer, id)
	}
	return "", fmt.Errorf("%w: address %q", ErrUnknownPeer, address)
}

// TransferLeaderRequest asks the leader to hand leadership to ID (any
// voter when empty). The caller must be a server.
type TransferLeaderRequest struct{ ID string }

// TransferLeader hands leadership over, to the server id or (empty) to
// the most up to date voter. A follower asks the leader.
func (s *Server) TransferLeader(ctx context.Context, id string) error {
	if s.IsLeader() {
		return rpcErr(s.transferLeader(id))
	}
	if s.cluster == nil {
		return ErrNotInCluster
	}
	return s.leaderCall(ctx, "TransferLeader", &TransferLeaderRequest{ID: id}, &Empty{}, false)
}

func (s *Server) rpcTransferLeader(ctx context.Context, req *TransferLeaderRequest) (*Empty, error) {
	if _, err := s.serverCallerAtLeader(ctx, "transferring leadership"); err != nil {
		return nil, err
	}
	if err := s.transferLeader(req.ID); err != nil {
		return nil, err
	}
	return &Empty{}, nil
}

// transferLeader runs on the leader; it returns gRPC statuses.
func (s *Server) transferLeader(id string) error {
	if id == "" {
		if err := s.transferLeadership(); err != nil {
			if errors.Is(err, ErrQuorum) {
				return refusedStatus(refusedQuorum, err.Error())
			}
			return status.Error(codes.Internal, err.Error())
		}
		return nil
	}
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	i := slices.IndexFunc(f.Configuration().Servers, func(srv hraft.Server) bool { return string(srv.ID) == id })
	switch {
	case i < 0:
		return status.Errorf(codes.InvalidArgument, "id: %q is not a server of the raft configuration", id)
	case f.Configuration().Servers[i].Suffrage != hraft.Voter:
		return status.Errorf(codes.InvalidArgument, "id: %q is not a voter; only a voter can lead", id)
	case id == s.nodeID:
		return status.Errorf(codes.InvalidArgument, "id: %q is already the leader", id)
	}
	srv := f.Configuration().Servers[i]
	if err := s.raft.LeadershipTransferToServer(srv.ID, srv.Address).Error(); err != nil {
		return status.Errorf(codes.Internal, "handing over leadership to %s: %v", id, err)
	}
	s.logger.Info("an operator handed leadership over", "to", id)
	return nil
}

// AutopilotState is the leader's autopilot state; a follower asks the
// leader.
func (s *Server) AutopilotState(ctx context.Context) (*discovery.AutopilotState, error) {
	if s.IsLeader() {
		return s.localAutopilotState()
	}
	if s.cluster == nil {
		return nil, ErrNotInCluster
	}
	var resp discovery.AutopilotState
	if err := s.leaderCall(ctx, "AutopilotState", &Empty{}, &resp, true); err != nil {
		return nil, err
	}
	return &resp, nil
}

func (s *Server) rpcAutopilotState(ctx context.Context, _ *Empty) (*discovery.AutopilotState, error) {
	if _, err := s.peerNode(ctx); err != nil {
		return nil, err
	}
	if !s.IsLeader() {
		return nil, s.notLeader(ctx)
	}
	st, err := s.localAutopilotState()
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return st, nil
}

// errNoAutopilot: this leader's autopilot has not made its first pass.
var errNoAutopilot = errors.New("raft: autopilot has no state yet; try again in a few seconds")

func (s *Server) localAutopilotState() (*discovery.AutopilotState, error) {
	ap := s.autopilot.Load()
	if ap == nil {
		return nil, errNoAutopilot
	}
	st := ap.GetState()
	if st == nil {
		return nil, errNoAutopilot
	}
	out := &discovery.AutopilotState{
		Healthy: st.Healthy, FailureTolerance: st.FailureTolerance, Leader: string(st.Leader),
		Voters: []string{}, Servers: []discovery.AutopilotServer{},
	}
	names := s.nodeNamesByID()
	for _, v := range st.Voters {
		out.Voters = append(out.Voters, string(v))
	}
	sort.Strings(out.Voters)
	for id, srv := range st.Servers {
		name := names[string(id)]
		if name == "" {
			name = srv.Server.Name
		}
		as := discovery.AutopilotServer{
			ID: string(id), Name: name, Address: string(srv.Server.Address), NodeStatus: string(srv.Server.NodeStatus),
			Version: srv.Server.Version, LastContact: srv.Stats.LastContact, LastTerm: srv.Stats.LastTerm,
			LastIndex: srv.Stats.LastIndex, Healthy: srv.Health.Healthy, StableSince: srv.Health.StableSince,
			Status: string(srv.State), Leader: srv.State == autopilot.RaftLeader,
			Voter: srv.State == autopilot.RaftLeader || srv.State == autopilot.RaftVoter,
		}
		out.Servers = append(out.Servers, as)
	}
	sort.Slice(out.Servers, func(i, j int) bool { return out.Servers[i].ID < out.Servers[j].ID })
	// Consul's optimistic tolerance counts the healthy voters beyond a
	// quorum, with no regard to stability; so does this.
	healthyVoters := 0
	for _, srv := range out.Servers {
		if srv.Voter && srv.Healthy {
			healthyVoters++
		}
	}
	out.OptimisticFailureTolerance = max(healthyVoters-(len(out.Voters)/2+1), 0)
	return out, nil
}

// ---- snapshots an operator saves and restores ----

// SaveSnapshot writes an archive of the current state (archive.go) to w
// and returns the raft index it covers. It takes a snapshot now; when
// nothing was written since the last one, it sends that.
func (s *Server) SaveSnapshot(w io.Writer) (uint64, error) {
	meta, rc, err := s.openSnapshot()
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	if err := writeArchive(w, meta, rc); err != nil {
		return 0, fmt.Errorf("writing snapshot archive: %w", err)
	}
	return meta.Index, nil
}

func (s *Server) openSnapshot() (*hraft.SnapshotMeta, io.ReadCloser, error) {
	f := s.raft.Snapshot()
	err := f.Error()
	if err == nil {
		return f.Open()
	}
	if !errors.Is(err, hraft.ErrNothingNewToSnapshot) {
		return nil, nil, fmt.Errorf("taking snapshot: %w", err)
	}
	metas, lerr := s.snaps.List()
	if lerr != nil || len(metas) == 0 {
		return nil, nil, fmt.Errorf("taking snapshot: %w (and no snapshot on disk: %v)", err, lerr)
	}
	return s.snaps.Open(metas[0].ID)
}

// RestoreRequest carries an archive to the leader. The caller must be a
// server.
type RestoreRequest struct{ Archive []byte }

// maxForwardedArchive bounds an archive a follower forwards: the cluster
// RPC takes messages of up to 4 MiB, and JSON sends bytes as base64.
const maxForwardedArchive = 3 << 20

// ErrArchiveTooLarge: a follower cannot forward an archive this large.
var ErrArchiveTooLarge = fmt.Errorf("raft: snapshot archive larger than %d bytes: send it to the leader's HTTP API", maxForwardedArchive)

// RestoreSnapshot replaces the whole state with the archive's, through
// raft's user restore on the leader: the leader takes it on, then sends
// it to the followers as a snapshot, and the cluster keeps serving. The
// archive is checked (checksums, and the state decoded into a scratch
// catalog) before anything changes, so a bad one changes nothing
// (ErrBadArchive). A follower sends it to the leader.
func (s *Server) RestoreSnapshot(ctx context.Context, archive []byte) error {
	meta, state, err := readArchive(bytes.NewReader(archive))
	if err != nil {
		return err
	}
	if err := checkState(state, s.logger); err != nil {
		return err
	}
	if s.IsLeader() {
		return s.restoreLocal(meta, state)
	}
	if s.cluster == nil {
		return ErrNotInCluster
	}
	if len(archive) > maxForwardedArchive {
		return ErrArchiveTooLarge
	}
	return s.leaderCall(ctx, "Restore", &RestoreRequest{Archive: archive}, &Empty{}, false)
}

func (s *Server) rpcRestore(ctx context.Context, req *RestoreRequest) (*Empty, error) {
	caller, err := s.serverCallerAtLeader(ctx, "restoring a snapshot")
	if err != nil {
		return nil, err
	}
	meta, state, err := readArchive(bytes.NewReader(req.Archive))
	if err == nil {
		err = checkState(state, s.logger)
	}
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.restoreLocal(meta, state); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	s.logger.Info("restored a snapshot an operator sent through a follower", "via", caller, "index", meta.Index)
	return &Empty{}, nil
}

func (s *Server) restoreLocal(meta *hraft.SnapshotMeta, state []byte) error {
	m := *meta
	m.Size = int64(len(state))
	if err := s.raft.Restore(&m, bytes.NewReader(state), time.Minute); err != nil {
		return fmt.Errorf("restoring snapshot: %w", err)
	}
	s.logger.Info("restored a snapshot", "snapshot_index", meta.Index, "catalog_index", s.store.LastIndex())
	return nil
}

// checkState decodes state into a scratch catalog: what the FSM would do,
// without touching this one.
func checkState(state []byte, logger *slog.Logger) error {
	f := newFSM(discovery.NewStore(), logger)
	f.hist = nil
	if err := f.Restore(io.NopCloser(bytes.NewReader(state))); err != nil {
		return fmt.Errorf("%w: state.bin: %v", ErrBadArchive, err)
	}
	return nil
}
