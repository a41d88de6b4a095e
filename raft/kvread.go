package raft

import (
	"context"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// KV lives only on servers: a client's replica never holds it. A client's
// HTTP API reads KV through the KVRead RPC, as a Consul client asks a
// server; blocking queries block on the server. Sessions, which hold KV
// locks, stay on the servers too and are read the same way.

// maxKVWait caps how long a KVRead blocks, as the HTTP API caps ?wait.
const maxKVWait = 10 * time.Minute

func (s *Server) rpcKVRead(ctx context.Context, q *discovery.KVQuery) (*discovery.KVResult, error) {
	if _, err := s.peerNode(ctx); err != nil {
		return nil, err
	}
	switch q.Op {
	case "get", "list", "keys", "session-info", "session-node", "session-list":
	default:
		return nil, status.Errorf(codes.InvalidArgument, "KV read op %q: want get, list, keys, session-info, session-node or session-list", q.Op)
	}
	if q.Consistent {
		if !s.IsLeader() {
			return nil, s.notLeader(ctx)
		}
		if err := s.raft.VerifyLeader().Error(); err != nil {
			return nil, s.notLeader(ctx)
		}
	}
	if q.MinIndex > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, min(max(q.Wait, time.Second), maxKVWait))
		defer cancel()
	}
	res := &discovery.KVResult{}
	err := s.store.Blocking(ctx, q.MinIndex, func(ws memdb.WatchSet) (uint64, error) {
		var err error
		switch q.Op {
		case "get":
			var e *discovery.KVEntry
			res.Index, e, err = s.store.KVGet(ws, q.Key)
			res.Entries = nil
			if e != nil {
				res.Entries = []*discovery.KVEntry{e}
			}
		case "list":
			res.Index, res.Entries, err = s.store.KVList(ws, q.Key)
		case "keys":
			res.Index, res.Keys, err = s.store.KVKeys(ws, q.Key, q.Separator)
		case "session-info":
			var sess *discovery.Session
			res.Index, sess, err = s.store.Session(ws, q.Key)
			res.Sessions = nil
			if sess != nil {
				res.Sessions = []*discovery.Session{sess}
			}
		case "session-node":
			res.Index, res.Sessions, err = s.store.NodeSessions(ws, q.Key)
		case "session-list":
			res.Index, res.Sessions, err = s.store.Sessions(ws)
		}
		return res.Index, err
	})
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	authz := acl.ManageAll("")
	if r := s.acl.resolver.Load(); r != nil {
		if _, authz, err = r.Resolve(q.Token); err != nil {
			return nil, aclStatus(err)
		}
	}
	if res.Filtered, err = discovery.AuthorizeKVRead(authz, *q, res); err != nil {
		return nil, aclStatus(err)
	}
	addr, _ := s.Leader()
	res.KnownLeader = addr != ""
	res.LastContact = s.LastContact()
	return res, nil
}

// KVRead asks a server for a KV read: the leader when it is known (a
// default read, as Consul's), else any server that answers; a consistent
// read only the leader. A blocking read blocks on the server.
func (c *Client) KVRead(ctx context.Context, q discovery.KVQuery) (discovery.KVResult, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, min(max(q.Wait, time.Second), maxKVWait)+maxForwardWait)
		defer cancel()
	}
	var res discovery.KVResult
	err := c.leaderCall(ctx, "KVRead", &q, &res, true)
	return res, err
}
