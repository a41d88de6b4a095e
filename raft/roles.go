package raft

import (
	"maps"

	"github.com/vmesh/vmesh/discovery"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A node is a server (a raft member holding the whole state) or a client
// (a replica of the catalog, writing through the leader). The leader
// records the role a joiner asked for in the catalog node's Meta, under
// RoleMetaKey, and that record is what decides: AddPeer refuses a node
// recorded as a client. Only the leader sets it:
//
//   - the FSM keeps a node's recorded role whatever a later RegisterNode
//     says (applyRegisterNode), so a node's own registration cannot change
//     it;
//   - a forwarded RegisterNode has its role rewritten by the leader to the
//     recorded one, or RoleClient when there is none (a node that
//     deregistered itself comes back as a client, never as a server).
const (
	RoleMetaKey = "vmesh-role"
	RoleServer  = "server"
	RoleClient  = "client"
)

// NodeRole is the role recorded for n ("" when none: a bootstrap server
// before its leader recorded it).
func NodeRole(n *discovery.Node) string {
	if n == nil {
		return ""
	}
	return n.Meta[RoleMetaKey]
}

// withRole returns n's Meta with the role set (or removed when role is
// ""), copied so the caller's map is not changed.
func withRole(meta map[string]string, role string) map[string]string {
	out := maps.Clone(meta)
	if out == nil {
		out = map[string]string{}
	}
	if role == "" {
		delete(out, RoleMetaKey)
	} else {
		out[RoleMetaKey] = role
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// applyRegisterNode is the FSM's RegisterNode: a node already recorded
// with a role keeps it.
func applyRegisterNode(s *discovery.Store, idx uint64, n *discovery.Node) error {
	if _, cur, _, err := s.Node(nil, n.Name); err == nil && cur != nil && NodeRole(cur) != "" && NodeRole(n) != NodeRole(cur) {
		n.Meta = withRole(n.Meta, NodeRole(cur))
	}
	return s.EnsureNode(idx, n)
}

// leaderRoleForward rewrites a forwarded RegisterNode so the role it
// carries is the one the catalog records, or RoleClient when none: a node
// never picks its own role.
func (s *Server) leaderRoleForward(buf []byte) ([]byte, error) {
	if len(buf) == 0 || discovery.MessageType(buf[0])&^discovery.IgnoreUnknownTypeFlag != discovery.RegisterNodeType {
		return buf, nil
	}
	var req discovery.RegisterNodeRequest
	if err := decode(buf[1:], &req); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "decoding RegisterNode: %v", err)
	}
	role := RoleClient
	if _, cur, _, err := s.store.Node(nil, req.Node.Name); err == nil && NodeRole(cur) != "" {
		role = NodeRole(cur)
	} else if cur != nil && s.inRaft(cur.ID) {
		// A server recorded before roles were: raft membership says what
		// it is.
		role = RoleServer
	}
	if NodeRole(&req.Node) == role {
		return buf, nil
	}
	req.Node.Meta = withRole(req.Node.Meta, role)
	return encodeCommand(req)
}

// inRaft says whether the raft configuration holds the server id.
func (s *Server) inRaft(id string) bool {
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, srv := range f.Configuration().Servers {
		if string(srv.ID) == id {
			return true
		}
	}
	return false
}

// joinRole is the role a join request asks for; "" (an older joiner)
// means server, as every joiner was one before roles.
func joinRole(r string) (string, error) {
	switch r {
	case "", RoleServer:
		return RoleServer, nil
	case RoleClient:
		return RoleClient, nil
	}
	return "", status.Errorf(codes.InvalidArgument, "Role %q: want %q or %q", r, RoleServer, RoleClient)
}
