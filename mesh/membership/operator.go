package membership

import (
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/discovery/httpapi"
	"github.com/vmesh/vmesh/raft"
)

// Consul's /v1/operator/raft, /v1/operator/autopilot and /v1/snapshot on
// this agent (httpapi.RaftOperator): a server answers; a client asks the
// leader for the reads (the raft configuration, autopilot's state) and
// refuses the rest with a 409 that says to ask a server.

func (m *Membership) RaftConfiguration(ctx context.Context) (discovery.RaftConfiguration, error) {
	if c := m.client(); c != nil {
		return c.RaftConfiguration(ctx)
	}
	srv := m.get()
	if srv == nil {
		return discovery.RaftConfiguration{}, httpapi.WithStatus(http.StatusConflict, m.notServer())
	}
	return srv.RaftConfiguration()
}

// RemoveRaftPeer removes the server with id or address: its node leaves
// the cluster with its certificates revoked, as ForceLeave does.
func (m *Membership) RemoveRaftPeer(ctx context.Context, id, address string) error {
	srv := m.get()
	if srv == nil {
		return httpapi.WithStatus(http.StatusConflict, m.notServer())
	}
	node, err := srv.PeerNode(id, address)
	if errors.Is(err, raft.ErrUnknownPeer) {
		return httpapi.WithStatus(http.StatusBadRequest, err)
	}
	if err != nil {
		return err
	}
	return operatorStatus(srv.RemoveNode(ctx, node))
}

func (m *Membership) TransferLeader(ctx context.Context, id string) error {
	srv := m.get()
	if srv == nil {
		return httpapi.WithStatus(http.StatusConflict, m.notServer())
	}
	return operatorStatus(srv.TransferLeader(ctx, id))
}

func (m *Membership) AutopilotState(ctx context.Context) (*discovery.AutopilotState, error) {
	if c := m.client(); c != nil {
		return c.AutopilotState(ctx)
	}
	srv := m.get()
	if srv == nil {
		return nil, httpapi.WithStatus(http.StatusConflict, m.notServer())
	}
	return srv.AutopilotState(ctx)
}

func (m *Membership) SaveSnapshot(_ context.Context, w io.Writer) (uint64, error) {
	srv := m.get()
	if srv == nil {
		return 0, httpapi.WithStatus(http.StatusConflict, m.notServer())
	}
	return srv.SaveSnapshot(w)
}

func (m *Membership) RestoreSnapshot(ctx context.Context, archive []byte) error {
	srv := m.get()
	if srv == nil {
		return httpapi.WithStatus(http.StatusConflict, m.notServer())
	}
	err := srv.RestoreSnapshot(ctx, archive)
	switch {
	case errors.Is(err, raft.ErrBadArchive):
		return httpapi.WithStatus(http.StatusBadRequest, err)
	case errors.Is(err, raft.ErrArchiveTooLarge):
		return httpapi.WithStatus(http.StatusRequestEntityTooLarge, err)
	}
	return operatorStatus(err)
}
