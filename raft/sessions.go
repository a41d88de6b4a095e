package raft

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sessions, transactions and the reads a client cannot serve.
//
// A session's TTL is the leader's business, as in Consul: the leader keeps
// a timer per session (TTL times discovery.SessionTTLMultiplier), resets
// it on each renewal, and when one fires destroys the session through
// raft, so every replica agrees on when it ended. The timers are memory
// only: a new leader starts every session's full period at the moment it
// takes over. A renewal is therefore not a raft write but a call to the
// leader (SessionRenew), from any node.
//
// Two cluster RPCs serve what discovery.Writer's Apply cannot:
//
//   - Txn: a transaction (discovery.TxnRequest) applied on the leader with
//     its result, which the plain Forward does not carry back; authorized
//     like a forwarded command (forward.go);
//   - SessionRenew: resets a session's timer on the leader.
//
// A client reads sessions as it reads KV, through KVRead (kvread.go): its
// replica holds neither. Any node certificate may call them, as any may
// forward a KV write; both carry the request's ACL token, which the
// leader checks (session:write on the session's node for a renewal, each
// operation's rule for a transaction) when ACLs are on.

// TxnForwardRequest is an encoded TxnRequest for the leader to apply,
// with the ACL token of the request that made it (acl.go).
type TxnForwardRequest struct {
	Command []byte
	Token   string `json:",omitempty"`
}

// TxnForwardResponse is the leader's answer: the transaction's result, or
// a catalog error.
type TxnForwardResponse struct {
	Index   uint64
	Result  *discovery.TxnResult
	ErrCode string
	ErrMsg  string
}

// SessionRenewRequest renews a session, with the ACL token of the
// request that asked.
type SessionRenewRequest struct {
	ID    string
	Token string `json:",omitempty"`
}

// SessionRenewResponse is the renewed session; nil when it does not
// exist (it ended).
type SessionRenewResponse struct{ Session *discovery.Session }

// ---- the leader's session timers ----

type sessionTimers struct {
	mu     sync.Mutex
	timers map[string]*time.Timer
	due    map[string]bool
	closed bool
	wake   chan struct{} // one slot: some timer fired
}

func newSessionTimers() *sessionTimers {
	return &sessionTimers{timers: map[string]*time.Timer{}, due: map[string]bool{}, wake: make(chan struct{}, 1)}
}

// arm starts or restarts id's timer to fire after d.
func (t *sessionTimers) arm(id string, d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	if tm, ok := t.timers[id]; ok {
		tm.Reset(d)
		return
	}
	t.timers[id] = time.AfterFunc(d, func() {
		t.mu.Lock()
		if !t.closed {
			t.due[id] = true
		}
		t.mu.Unlock()
		select {
		case t.wake <- struct{}{}:
		default:
		}
	})
}

// sessionPeriod is how long the leader waits for a renewal before it
// ends a session: Consul's TTL times its multiplier. A variable so that
// tests need not wait 20 s for the shortest TTL.
var sessionPeriod = func(ttl time.Duration) time.Duration { return ttl * discovery.SessionTTLMultiplier }

// renew restarts a session's full period.
func (t *sessionTimers) renew(sess *discovery.Session) {
	if sess.TTL > 0 {
		t.arm(sess.ID, sessionPeriod(sess.TTL))
	}
}

// sync gives every session with a TTL a timer (a session created since,
// or every one when leadership starts) and drops the timers of sessions
// that ended.
func (t *sessionTimers) sync(sessions []*discovery.Session) {
	live := make(map[string]bool, len(sessions))
	for _, sess := range sessions {
		live[sess.ID] = true
		t.mu.Lock()
		_, ok := t.timers[sess.ID]
		t.mu.Unlock()
		if !ok {
			t.renew(sess)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, tm := range t.timers {
		if !live[id] && !t.due[id] {
			tm.Stop()
			delete(t.timers, id)
		}
	}
}

// takeDue returns the sessions whose timers fired and forgets them.
func (t *sessionTimers) takeDue() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for id := range t.due {
		out = append(out, id)
		delete(t.due, id)
		delete(t.timers, id)
	}
	return out
}

func (t *sessionTimers) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for _, tm := range t.timers {
		tm.Stop()
	}
	t.timers, t.due = nil, nil
}

// expireRetry is how soon the leader tries again to destroy an expired
// session whose destroy failed.
const expireRetry = time.Second

// startSessionTimers runs the session timers while this server leads;
// the returned stop ends them. leaderLoop calls it after its barrier, so
// the catalog holds every session the cluster has.
func (s *Server) startSessionTimers(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	t := newSessionTimers()
	s.sessions.Store(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.runSessionTimers(ctx, t)
	}()
	return func() {
		cancel()
		<-done
		s.sessions.CompareAndSwap(t, nil)
		t.close()
	}
}

func (s *Server) runSessionTimers(ctx context.Context, t *sessionTimers) {
	for {
		ws := memdb.NewWatchSet()
		if _, sessions, err := s.store.Sessions(ws); err == nil {
			t.sync(sessions)
		}
		wctx, cancel := context.WithCancel(ctx)
		changed := ws.WatchCh(wctx)
		select {
		case <-ctx.Done():
			cancel()
			return
		case <-changed:
		case <-t.wake:
		}
		cancel()
		for _, id := range t.takeDue() {
			s.expireSession(ctx, t, id)
		}
	}
}

// expireSession destroys a session whose TTL ran out; a destroy that
// fails is tried again while this server leads.
func (s *Server) expireSession(ctx context.Context, t *sessionTimers, id string) {
	_, err := s.applyCmd(ctx, discovery.SessionRequest{Op: discovery.SessionDestroy, Session: discovery.Session{ID: id}})
	if err == nil {
		s.logger.Info("session expired: no renewal within its TTL", "session", id)
		return
	}
	if ctx.Err() != nil {
		return // no longer the leader: the next one starts its own timers
	}
	s.logger.Warn("destroying an expired session", "session", id, "err", err)
	t.arm(id, expireRetry)
}

// ---- renew ----

// RenewSession restarts a session's TTL on the leader and returns the
// session; nil when it does not exist (it ended).
func (s *Server) RenewSession(ctx context.Context, id string) (*discovery.Session, error) {
	if s.cluster == nil || s.IsLeader() {
		return s.renewLocal(id), nil
	}
	var resp SessionRenewResponse
	if err := s.leaderCall(ctx, "SessionRenew", &SessionRenewRequest{ID: id, Token: discovery.TokenFrom(ctx)}, &resp, true); err != nil {
		return nil, err
	}
	return resp.Session, nil
}

func (s *Server) renewLocal(id string) *discovery.Session {
	_, sess, _ := s.store.Session(nil, id)
	if sess == nil {
		return nil
	}
	// Before the timers run (the start of a leadership) there is nothing
	// to reset: they will start every session's full period.
	if t := s.sessions.Load(); t != nil {
		t.renew(sess)
	}
	return sess
}

func (s *Server) rpcSessionRenew(ctx context.Context, req *SessionRenewRequest) (*SessionRenewResponse, error) {
	if _, err := s.peerNode(ctx); err != nil {
		return nil, err
	}
	if !s.IsLeader() {
		return nil, s.notLeader(ctx)
	}
	if r := s.acl.resolver.Load(); r != nil {
		if _, sess, _ := s.store.Session(nil, req.ID); sess != nil {
			_, authz, err := r.Resolve(req.Token)
			if err == nil {
				err = authz.SessionWrite(sess.Node)
			}
			if errors.Is(err, acl.ErrNotFound) || errors.Is(err, acl.ErrPermissionDenied) {
				return nil, status.Error(codes.PermissionDenied, err.Error())
			}
			if err != nil {
				return nil, err
			}
		}
	}
	return &SessionRenewResponse{Session: s.renewLocal(req.ID)}, nil
}

// RenewSession has the leader restart a session's TTL.
func (c *Client) RenewSession(ctx context.Context, id string) (*discovery.Session, error) {
	var resp SessionRenewResponse
	if err := c.leaderCall(ctx, "SessionRenew", &SessionRenewRequest{ID: id, Token: discovery.TokenFrom(ctx)}, &resp, true); err != nil {
		return nil, err
	}
	return resp.Session, nil
}

// ---- transactions ----

// ApplyTxn commits a transaction through raft and returns its result: the
// operations' results, or the errors of those that failed (then nothing
// changed). It returns once this node's catalog has applied it.
func (s *Server) ApplyTxn(ctx context.Context, req discovery.TxnRequest) (uint64, *discovery.TxnResult, error) {
	buf, err := encodeCommand(req)
	if err != nil {
		return 0, nil, err
	}
	if s.cluster != nil && !s.IsLeader() {
		return s.forwardTxn(ctx, buf)
	}
	idx, resp, err := s.applyLocalResp(ctx, buf)
	if errors.Is(err, ErrNotLeader) && s.cluster != nil {
		return s.forwardTxn(ctx, buf)
	}
	if err != nil {
		return 0, nil, err
	}
	return txnResult(idx, resp)
}

func txnResult(idx uint64, resp any) (uint64, *discovery.TxnResult, error) {
	switch r := resp.(type) {
	case *discovery.TxnResult:
		return idx, r, nil
	case error:
		return idx, nil, r
	}
	return idx, nil, fmt.Errorf("raft: a transaction answered %T", resp)
}

// forwardTxn has the leader apply a transaction. It is not sent again
// after a call that may have reached a leader that then died: unlike a
// registration, a transaction need not be idempotent.
func (s *Server) forwardTxn(ctx context.Context, buf []byte) (uint64, *discovery.TxnResult, error) {
	var resp TxnForwardResponse
	if err := s.leaderCall(ctx, "Txn", &TxnForwardRequest{Command: buf, Token: discovery.TokenFrom(ctx)}, &resp, false); err != nil {
		return 0, nil, err
	}
	if err := s.waitApplied(ctx, resp.Index); err != nil {
		return 0, nil, err
	}
	if err := decodeRemoteErr(resp.ErrCode, resp.ErrMsg); err != nil {
		return resp.Index, nil, err
	}
	return resp.Index, resp.Result, nil
}

func (s *Server) rpcTxn(ctx context.Context, req *TxnForwardRequest) (*TxnForwardResponse, error) {
	caller, err := s.peerNode(ctx)
	if err != nil {
		return nil, err
	}
	if len(req.Command) == 0 || discovery.MessageType(req.Command[0])&^discovery.IgnoreUnknownTypeFlag != discovery.TxnType {
		return nil, status.Error(codes.InvalidArgument, "Txn carries only a transaction")
	}
	if err := authorizeForward(caller, req.Command); err != nil {
		return nil, err
	}
	if err := s.authorizeForwardACL(req.Token, req.Command); err != nil {
		s.logger.Warn("refused a forwarded transaction by ACL", "caller", caller, "err", err)
		return nil, err
	}
	if !s.IsLeader() {
		return nil, s.notLeader(ctx)
	}
	idx, resp, err := s.applyLocalResp(ctx, req.Command)
	if errors.Is(err, ErrNotLeader) {
		return nil, s.notLeader(ctx)
	}
	if err == nil {
		var r *discovery.TxnResult
		if idx, r, err = txnResult(idx, resp); err == nil {
			return &TxnForwardResponse{Index: idx, Result: r}, nil
		}
	}
	code, msg := encodeRemoteErr(err)
	if code == "other" && idx == 0 {
		return nil, status.Error(codes.Internal, msg)
	}
	return &TxnForwardResponse{Index: idx, ErrCode: code, ErrMsg: msg}, nil
}

// ApplyTxn has the leader apply a transaction. KV is not in the replica,
// so there is nothing to wait for before returning.
func (c *Client) ApplyTxn(ctx context.Context, req discovery.TxnRequest) (uint64, *discovery.TxnResult, error) {
	buf, err := encodeCommand(req)
	if err != nil {
		return 0, nil, err
	}
	var resp TxnForwardResponse
	if err := c.leaderCall(ctx, "Txn", &TxnForwardRequest{Command: buf, Token: discovery.TokenFrom(ctx)}, &resp, false); err != nil {
		return 0, nil, err
	}
	if err := decodeRemoteErr(resp.ErrCode, resp.ErrMsg); err != nil {
		return resp.Index, nil, err
	}
	return resp.Index, resp.Result, nil
}
