package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/discovery"
)

// registerSessions adds Consul's /v1/session endpoints.
func (a *API) registerSessions(mux *http.ServeMux) {
	mux.HandleFunc("PUT /v1/session/create", a.sessionCreate)
	mux.HandleFunc("PUT /v1/session/destroy/{id}", a.sessionDestroy)
	mux.HandleFunc("PUT /v1/session/renew/{id}", a.sessionRenew)
	mux.HandleFunc("GET /v1/session/info/{id}", a.sessionRead("session-info", "id"))
	mux.HandleFunc("GET /v1/session/node/{node}", a.sessionRead("session-node", "node"))
	mux.HandleFunc("GET /v1/session/list", a.sessionRead("session-list", ""))
}

// wireSession is a session as Consul's API shows it.
type wireSession struct {
	ID            string
	Name          string
	Node          string
	LockDelay     time.Duration
	Behavior      string
	TTL           string
	NodeChecks    []string
	ServiceChecks []wireServiceCheck
	CreateIndex   uint64
	ModifyIndex   uint64
}

type wireServiceCheck struct {
	ID        string
	Namespace string `json:",omitempty"`
}

func toWireSession(s *discovery.Session) *wireSession {
	out := &wireSession{ID: s.ID, Name: s.Name, Node: s.Node, LockDelay: s.LockDelay, Behavior: s.Behavior,
		NodeChecks: nonNil(s.NodeChecks), CreateIndex: s.CreateIndex, ModifyIndex: s.ModifyIndex}
	if s.TTL > 0 {
		out.TTL = s.TTL.String()
	}
	for _, id := range s.ServiceChecks {
		out.ServiceChecks = append(out.ServiceChecks, wireServiceCheck{ID: id})
	}
	return out
}

// sessionCreateBody is what PUT /v1/session/create takes. The checks are
// pointers so that an absent list (the default: the node check) differs
// from an empty one (no checks), as in Consul.
type sessionCreateBody struct {
	Name          string
	Node          string
	LockDelay     lockDelay
	Behavior      string
	TTL           string
	Checks        *[]string // before Consul 1.7; folded into NodeChecks
	NodeChecks    *[]string
	ServiceChecks []wireServiceCheck
	Namespace     string
	Partition     string
	// Sent back by tools that PUT a whole session entry; the server
	// chooses them, so they are ignored, as Consul does.
	ID          string
	CreateIndex uint64
	ModifyIndex uint64
}

// lockDelay decodes a session's LockDelay as Consul does: a duration
// string ("15s", which consul/api sends as milliseconds), or a number
// that is seconds below 1000 and nanoseconds from there.
type lockDelay struct {
	d   time.Duration
	set bool
}

func (l *lockDelay) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("LockDelay: %q is not a duration", s)
		}
		l.d, l.set = d, true
		return nil
	}
	var n float64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("LockDelay: %s is neither a duration string nor a number", b)
	}
	if n < 1000 {
		l.d = time.Duration(n * float64(time.Second))
	} else {
		l.d = time.Duration(n)
	}
	l.set = true
	return nil
}

// parseSessionCreate turns a create body into a session on node (the
// agent's own unless the body names one), with Consul's defaults.
func parseSessionCreate(body []byte, node string) (*discovery.Session, error) {
	var in sessionCreateBody
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil {
			if strings.HasPrefix(err.Error(), "LockDelay") {
				return nil, badRequest("%s", err)
			}
			return nil, decodeError(err)
		}
		if dec.More() {
			return nil, badRequest("Request decode failed: trailing data after the JSON object")
		}
	}
	for _, f := range []struct{ name, v string }{{"Namespace", in.Namespace}, {"Partition", in.Partition}} {
		if f.v != "" && f.v != "default" {
			return nil, badRequest("%s: %q is not supported; only the default", f.name, f.v)
		}
	}
	sess := &discovery.Session{ID: newUUID(), Name: in.Name, Node: in.Node, Behavior: in.Behavior, LockDelay: discovery.DefaultLockDelay}
	if sess.Node == "" {
		sess.Node = node
	}
	if sess.Behavior == "" {
		sess.Behavior = discovery.SessionRelease
	}
	if in.LockDelay.set {
		sess.LockDelay = in.LockDelay.d
	}
	if in.TTL != "" {
		ttl, err := time.ParseDuration(in.TTL)
		if err != nil {
			return nil, badRequest("TTL: %q is not a duration", in.TTL)
		}
		sess.TTL = ttl
	}
	// Consul's defaults: the node check, unless a list says otherwise.
	// An empty legacy Checks list means no checks; a legacy list of
	// other checks adds to the node's.
	nodeChecks := []string{discovery.NodeLivenessCheckID}
	if in.NodeChecks != nil {
		nodeChecks = *in.NodeChecks
	}
	if in.Checks != nil {
		if len(*in.Checks) == 0 && in.NodeChecks == nil {
			nodeChecks = nil
		}
		for _, id := range *in.Checks {
			if !slices.Contains(nodeChecks, id) {
				nodeChecks = append(nodeChecks, id)
			}
		}
	}
	sess.NodeChecks = nodeChecks
	if len(sess.NodeChecks) == 0 {
		sess.NodeChecks = nil
	}
	for i, sc := range in.ServiceChecks {
		if sc.ID == "" {
			return nil, badRequest("ServiceChecks[%d].ID: missing", i)
		}
		if sc.Namespace != "" && sc.Namespace != "default" {
			return nil, badRequest("ServiceChecks[%d].Namespace: %q is not supported; only the default", i, sc.Namespace)
		}
		sess.ServiceChecks = append(sess.ServiceChecks, sc.ID)
	}
	if err := discovery.ValidateSession(sess); err != nil {
		return nil, badRequest("%s", strings.TrimPrefix(err.Error(), discovery.ErrInvalid.Error()+": "))
	}
	return sess, nil
}

func (a *API) sessionCreate(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	sess, err := parseSessionCreate(body, a.NodeName)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if _, err := a.apply(r, discovery.SessionRequest{Op: discovery.SessionCreate, Session: *sess}); err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, struct{ ID string }{sess.ID})
}

func (a *API) sessionDestroy(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := a.apply(r, discovery.SessionRequest{Op: discovery.SessionDestroy, Session: discovery.Session{ID: id}}); err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, true)
}

// sessionRenew restarts a session's TTL on the leader; a session that has
// ended is a 404, which tells consul/api's RenewPeriodic to stop.
func (a *API) sessionRenew(w http.ResponseWriter, r *http.Request) {
	if a.Sessions == nil {
		a.writeError(w, r, errNoSessions)
		return
	}
	id := r.PathValue("id")
	// session:write on its node: checked here when this agent holds the
	// session, and by the leader, which always does.
	authz, err := a.authorizer(r)
	if err == nil {
		if _, local, _ := a.Store.Session(nil, id); local != nil {
			err = authz.SessionWrite(local.Node)
		}
	}
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	sess, err := a.Sessions.RenewSession(discovery.WithToken(r.Context(), requestToken(r)), id)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if sess == nil {
		a.writeError(w, r, notFound("Session id '%s' not found", id))
		return
	}
	writeJSON(w, []*wireSession{toWireSession(sess)})
}

// sessionRead serves the session reads (op as KVQuery names it, on the
// path value param) from the local catalog, or on a client, whose replica
// holds no sessions, from a server as KV reads are; either way without
// the sessions whose node the token may not read sessions of.
func (a *API) sessionRead(op, param string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key := ""
		if param != "" {
			key = r.PathValue(param)
		}
		var sessions []*discovery.Session
		if a.RemoteKV != nil && !a.RemoteKV.HoldsKV() {
			res, ok := a.kvReadRemote(w, r, discovery.KVQuery{Op: op, Key: key})
			if !ok {
				return
			}
			writeSessions(w, res.Sessions)
			return
		}
		authz, ok := a.allow(w, r, nil)
		if !ok {
			return
		}
		if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
			var idx uint64
			var err error
			switch op {
			case "session-info":
				var sess *discovery.Session
				idx, sess, err = a.Store.Session(ws, key)
				sessions = nil
				if sess != nil {
					sessions = []*discovery.Session{sess}
				}
			case "session-node":
				idx, sessions, err = a.Store.NodeSessions(ws, key)
			default:
				idx, sessions, err = a.Store.Sessions(ws)
			}
			res := discovery.KVResult{Sessions: sessions}
			filtered, _ := discovery.AuthorizeKVRead(authz, discovery.KVQuery{Op: op}, &res)
			sessions = res.Sessions
			setFiltered(w, filtered)
			return idx, err
		}) {
			return
		}
		writeSessions(w, sessions)
	}
}

func writeSessions(w http.ResponseWriter, sessions []*discovery.Session) {
	out := make([]*wireSession, 0, len(sessions))
	for _, s := range sessions {
		out = append(out, toWireSession(s))
	}
	writeJSON(w, out)
}
