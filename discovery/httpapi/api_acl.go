package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
)

// ACLResolver turns a request's token into its Authorizer: on a server
// from its own ACL state, on a client by asking a server (cached until the
// ACL state changes). Nil on API means ACLs are off: every request may do
// everything, as with Consul's acl.enabled = false.
type ACLResolver interface {
	Resolve(ctx context.Context, secret string) (*acl.Token, *acl.Authorizer, error)
}

// authorizer is the request's Authorizer (its token from X-Consul-Token,
// Authorization: Bearer or ?token=).
func (a *API) authorizer(r *http.Request) (*acl.Authorizer, error) {
	if a.ACL == nil {
		return acl.ManageAll(""), nil
	}
	_, authz, err := a.ACL.Resolve(r.Context(), requestToken(r))
	return authz, err
}

// allow answers 403 unless check passes for the request's token; it
// returns the Authorizer for further checks.
func (a *API) allow(w http.ResponseWriter, r *http.Request, check func(*acl.Authorizer) error) (*acl.Authorizer, bool) {
	authz, err := a.authorizer(r)
	if err == nil && check != nil {
		err = check(authz)
	}
	if err != nil {
		a.writeError(w, r, err)
		return nil, false
	}
	return authz, true
}

// aclError is the status an ACL error answers with: 403 with Consul's
// text (consul/api recognizes "Permission denied" and "ACL not found").
func aclError(err error) (int, bool) {
	switch {
	case errors.Is(err, acl.ErrPermissionDenied), errors.Is(err, acl.ErrNotFound):
		return http.StatusForbidden, true
	case errors.Is(err, discovery.ErrACLBootstrapped):
		return http.StatusForbidden, true
	}
	return 0, false
}

// aclRead reads the ACL state: from this agent's catalog on a server,
// from a server on a client.
func (a *API) aclRead(r *http.Request, q discovery.ACLQuery) (discovery.ACLResult, error) {
	q.Token = requestToken(r)
	if a.RemoteKV != nil && !a.RemoteKV.HoldsKV() {
		return a.RemoteKV.ACLRead(r.Context(), q)
	}
	authz, err := a.authorizer(r)
	if err != nil {
		return discovery.ACLResult{}, err
	}
	return discovery.ACLRead(a.Store, authz, q)
}

func (a *API) registerACL(mux *http.ServeMux) {
	mux.HandleFunc("PUT /v1/acl/bootstrap", a.aclBootstrap)
	mux.HandleFunc("PUT /v1/acl/token", a.aclTokenCreate)
	mux.HandleFunc("GET /v1/acl/token/self", a.aclTokenSelf)
	mux.HandleFunc("GET /v1/acl/token/{id}", a.aclReadOne("token", func(res discovery.ACLResult) any { return res.Token }))
	mux.HandleFunc("PUT /v1/acl/token/{id}", a.aclTokenUpdate)
	mux.HandleFunc("PUT /v1/acl/token/{id}/clone", a.aclTokenClone)
	mux.HandleFunc("DELETE /v1/acl/token/{id}", a.aclDelete(func(id string) discovery.Command {
		return discovery.ACLTokenDeleteRequest{AccessorID: id}
	}))
	mux.HandleFunc("GET /v1/acl/tokens", a.aclTokenList)
	mux.HandleFunc("PUT /v1/acl/policy", a.aclPolicyWrite)
	mux.HandleFunc("GET /v1/acl/policy/{id}", a.aclReadOne("policy", func(res discovery.ACLResult) any { return res.Policy }))
	mux.HandleFunc("GET /v1/acl/policy/name/{id}", a.aclReadOne("policy-name", func(res discovery.ACLResult) any { return res.Policy }))
	mux.HandleFunc("PUT /v1/acl/policy/{id}", a.aclPolicyWrite)
	mux.HandleFunc("DELETE /v1/acl/policy/{id}", a.aclDelete(func(id string) discovery.Command {
		return discovery.ACLPolicyDeleteRequest{ID: id}
	}))
	mux.HandleFunc("GET /v1/acl/policies", a.aclReadList("policies", func(res discovery.ACLResult) any { return nonNilSlice(res.Policies) }))
	mux.HandleFunc("PUT /v1/acl/role", a.aclRoleWrite)
	mux.HandleFunc("GET /v1/acl/role/{id}", a.aclReadOne("role", func(res discovery.ACLResult) any { return res.Role }))
	mux.HandleFunc("GET /v1/acl/role/name/{id}", a.aclReadOne("role-name", func(res discovery.ACLResult) any { return res.Role }))
	mux.HandleFunc("PUT /v1/acl/role/{id}", a.aclRoleWrite)
	mux.HandleFunc("DELETE /v1/acl/role/{id}", a.aclDelete(func(id string) discovery.Command {
		return discovery.ACLRoleDeleteRequest{ID: id}
	}))
	mux.HandleFunc("GET /v1/acl/roles", a.aclReadList("roles", func(res discovery.ACLResult) any { return nonNilSlice(res.Roles) }))
}

func nonNilSlice[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// aclBootstrap makes the initial management token, once (Consul's
// PUT /v1/acl/bootstrap). A later call is a 403 that names the reset
// index, as Consul's; PUT with the body {"BootstrapSecret"} is not
// supported. A reset is never taken from the request (?reset-index=):
// the index is in the 403 that anyone gets, so that would hand a
// management token to whoever can reach the API. Consul takes it from a
// file in the leader's data directory, which proves access to that host.
func (a *API) aclBootstrap(w http.ResponseWriter, r *http.Request) {
	if a.ACL == nil {
		a.writeError(w, r, &HTTPError{Code: http.StatusUnauthorized, Msg: "ACL support disabled"})
		return
	}
	if r.URL.Query().Has("reset-index") {
		a.writeError(w, r, badRequest("reset-index: an ACL bootstrap is not reset through the HTTP API: "+
			"the reset index is in the answer anyone gets, so it proves nothing about the caller"))
		return
	}
	accessor, err1 := acl.NewID()
	secret, err2 := acl.NewID()
	if err := errors.Join(err1, err2); err != nil {
		a.writeError(w, r, err)
		return
	}
	tok := acl.Token{AccessorID: accessor, SecretID: secret, Description: "Bootstrap Token (Global Management)",
		Policies: []acl.Link{{ID: acl.ManagementPolicyID, Name: acl.ManagementPolicyName}}, CreateTime: time.Now().UTC()}
	var reset uint64
	if a.ACLBootstrapReset != nil {
		if reset, err1 = a.ACLBootstrapReset(); err1 != nil {
			a.writeError(w, r, err1)
			return
		}
	}
	if _, err := a.Writer.Apply(r.Context(), discovery.ACLBootstrapRequest{Token: tok, ResetIndex: reset}); err != nil {
		if errors.Is(err, discovery.ErrACLBootstrapped) {
			//lint:ignore ST1005 Consul's own wording
			err = &HTTPError{Code: http.StatusForbidden, Msg: "Permission denied: " + strings.TrimPrefix(err.Error(), discovery.ErrInvalid.Error()+": "), Err: err}
		}
		a.writeError(w, r, err)
		return
	}
	a.writeACLToken(w, r, secret, accessor)
}

// writeACLToken answers with the token just written, read back with the
// token secret that created it (so its secret shows only to acl:write).
func (a *API) writeACLToken(w http.ResponseWriter, r *http.Request, readAs, accessor string) {
	if readAs != "" {
		r = r.Clone(r.Context())
		r.Header.Set("X-Consul-Token", readAs)
	}
	res, err := a.aclRead(r, discovery.ACLQuery{Op: "token", ID: accessor})
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, res.Token)
}

func (a *API) aclTokenSelf(w http.ResponseWriter, r *http.Request) {
	if _, ok := a.allow(w, r, nil); !ok {
		return
	}
	res, err := a.aclRead(r, discovery.ACLQuery{Op: "token-self"})
	if err != nil {
		if errors.Is(err, discovery.ErrNotFound) {
			err = acl.ErrNotFound
		}
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, res.Token)
}

func (a *API) aclReadOne(op string, pick func(discovery.ACLResult) any) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		res, err := a.aclRead(r, discovery.ACLQuery{Op: op, ID: r.PathValue("id")})
		if err != nil {
			if errors.Is(err, discovery.ErrNotFound) {
				// Consul answers a missing token, policy or role with 403
				// "ACL not found" on reads by ID.
				err = &HTTPError{Code: http.StatusNotFound, Msg: "Requested " + strings.TrimSuffix(op, "-name") + " not found", Err: err}
			}
			a.writeError(w, r, err)
			return
		}
		a.aclHeaders(w, res.Index)
		writeJSON(w, pick(res))
	}
}

func (a *API) aclReadList(op string, pick func(discovery.ACLResult) any) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		res, err := a.aclRead(r, discovery.ACLQuery{Op: op})
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		a.aclHeaders(w, res.Index)
		writeJSON(w, pick(res))
	}
}

func (a *API) aclHeaders(w http.ResponseWriter, idx uint64) {
	leader, _ := a.Cluster.Leader()
	w.Header().Set("X-Consul-Index", fmt.Sprint(max(idx, 1)))
	w.Header().Set("X-Consul-KnownLeader", fmt.Sprint(leader != ""))
	w.Header().Set("X-Consul-LastContact", fmt.Sprint(a.Cluster.LastContact().Milliseconds()))
}

// aclTokenCreate is PUT /v1/acl/token: new IDs unless given, the
// expiration from ExpirationTTL, the links completed by the leader.
func (a *API) aclTokenCreate(w http.ResponseWriter, r *http.Request) {
	var tok acl.Token
	if err := decodeACLBody(w, r, &tok); err != nil {
		a.writeError(w, r, err)
		return
	}
	var err error
	if tok.AccessorID == "" {
		if tok.AccessorID, err = acl.NewID(); err != nil {
			a.writeError(w, r, err)
			return
		}
	}
	if tok.SecretID == "" {
		if tok.SecretID, err = acl.NewID(); err != nil {
			a.writeError(w, r, err)
			return
		}
	}
	tok.CreateTime = time.Now().UTC()
	if tok.ExpirationTTL > 0 {
		exp := tok.CreateTime.Add(tok.ExpirationTTL)
		tok.ExpirationTime = &exp
	}
	if err := tok.Validate(); err != nil {
		a.writeError(w, r, badRequest("%v", err))
		return
	}
	if _, err := a.apply(r, discovery.ACLTokenSetRequest{Token: tok}); err != nil {
		a.writeError(w, r, err)
		return
	}
	a.writeACLToken(w, r, "", tok.AccessorID)
}

func (a *API) aclTokenUpdate(w http.ResponseWriter, r *http.Request) {
	var tok acl.Token
	if err := decodeACLBody(w, r, &tok); err != nil {
		a.writeError(w, r, err)
		return
	}
	id := r.PathValue("id")
	if tok.AccessorID != "" && tok.AccessorID != id {
		a.writeError(w, r, badRequest("AccessorID: %q does not match the URL's %q", tok.AccessorID, id))
		return
	}
	cur, err := a.aclRead(r, discovery.ACLQuery{Op: "token", ID: id})
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	tok.AccessorID = id
	if tok.SecretID == "<hidden>" {
		tok.SecretID = ""
	}
	// Expiry never changes after creation, as in Consul.
	tok.ExpirationTime, tok.ExpirationTTL = cur.Token.ExpirationTime, 0
	if _, err := a.apply(r, discovery.ACLTokenSetRequest{Token: tok}); err != nil {
		a.writeError(w, r, err)
		return
	}
	a.writeACLToken(w, r, "", id)
}

func (a *API) aclTokenClone(w http.ResponseWriter, r *http.Request) {
	var body struct{ Description string }
	if r.ContentLength != 0 {
		if err := decodeBody(w, r, &body); err != nil {
			a.writeError(w, r, err)
			return
		}
	}
	if _, ok := a.allow(w, r, (*acl.Authorizer).ACLWrite); !ok {
		return
	}
	cur, err := a.aclRead(r, discovery.ACLQuery{Op: "token", ID: r.PathValue("id")})
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	tok := *cur.Token
	if tok.AccessorID, err = acl.NewID(); err == nil {
		tok.SecretID, err = acl.NewID()
	}
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if body.Description != "" {
		tok.Description = body.Description
	}
	tok.CreateTime = time.Now().UTC()
	if _, err := a.apply(r, discovery.ACLTokenSetRequest{Token: tok}); err != nil {
		a.writeError(w, r, err)
		return
	}
	a.writeACLToken(w, r, "", tok.AccessorID)
}

func (a *API) aclDelete(cmd func(id string) discovery.Command) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		switch cmd(id).(type) {
		case discovery.ACLTokenDeleteRequest:
			if id == acl.AnonymousAccessorID {
				a.writeError(w, r, badRequest("Delete of the anonymous token is not permitted"))
				return
			}
		case discovery.ACLPolicyDeleteRequest:
			if id == acl.ManagementPolicyID || id == acl.ReadOnlyPolicyID {
				a.writeError(w, r, badRequest("Delete of the builtin policy %s is not permitted", id))
				return
			}
		}
		if _, err := a.apply(r, cmd(id)); err != nil {
			a.writeError(w, r, err)
			return
		}
		writeJSON(w, true)
	}
}

func (a *API) aclPolicyWrite(w http.ResponseWriter, r *http.Request) {
	var p acl.Policy
	if err := decodeACLBody(w, r, &p); err != nil {
		a.writeError(w, r, err)
		return
	}
	if id := r.PathValue("id"); id != "" {
		if p.ID != "" && p.ID != id {
			a.writeError(w, r, badRequest("ID: %q does not match the URL's %q", p.ID, id))
			return
		}
		p.ID = id
	} else if p.ID != "" {
		a.writeError(w, r, badRequest("ID: a new policy gets its ID from the agent"))
		return
	}
	if p.ID == acl.ManagementPolicyID || p.ID == acl.ReadOnlyPolicyID {
		a.writeError(w, r, badRequest("Changing the builtin policy %s is not permitted", p.ID))
		return
	}
	if p.ID == "" {
		var err error
		if p.ID, err = acl.NewID(); err != nil {
			a.writeError(w, r, err)
			return
		}
	}
	if err := p.Validate(); err != nil {
		a.writeError(w, r, badRequest("%v", err))
		return
	}
	if _, err := acl.ParseRules(p.Rules); err != nil {
		a.writeError(w, r, badRequest("Rules: %v", err))
		return
	}
	if _, err := a.apply(r, discovery.ACLPolicySetRequest{Policy: p}); err != nil {
		a.writeError(w, r, err)
		return
	}
	res, err := a.aclRead(r, discovery.ACLQuery{Op: "policy", ID: p.ID})
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, res.Policy)
}

func (a *API) aclRoleWrite(w http.ResponseWriter, r *http.Request) {
	var role acl.Role
	if err := decodeACLBody(w, r, &role); err != nil {
		a.writeError(w, r, err)
		return
	}
	if id := r.PathValue("id"); id != "" {
		if role.ID != "" && role.ID != id {
			a.writeError(w, r, badRequest("ID: %q does not match the URL's %q", role.ID, id))
			return
		}
		role.ID = id
	}
	if role.ID == "" {
		var err error
		if role.ID, err = acl.NewID(); err != nil {
			a.writeError(w, r, err)
			return
		}
	}
	if err := role.Validate(); err != nil {
		a.writeError(w, r, badRequest("%v", err))
		return
	}
	if _, err := a.apply(r, discovery.ACLRoleSetRequest{Role: role}); err != nil {
		a.writeError(w, r, err)
		return
	}
	res, err := a.aclRead(r, discovery.ACLQuery{Op: "role", ID: role.ID})
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, res.Role)
}

// decodeACLBody decodes an ACL object leniently about the fields Consul's
// client sends that vmesh does not keep (Namespace, Partition, Legacy,
// TemplatedPolicies, …): they are ignored, as an older Consul does.
func decodeACLBody(w http.ResponseWriter, r *http.Request, out any) error {
	dec := newLenientDecoder(w, r)
	if err := dec.Decode(out); err != nil {
		return decodeError(err)
	}
	return nil
}

// aclTokenList serves GET /v1/acl/tokens with Consul's filters: ?policy=
// (a policy ID), ?role= (a role ID) and ?servicename= (a service
// identity) keep the tokens that link it, one filter at a time, as
// Consul; ?authmethod= is a 400 (vmesh has no auth methods, so filtering
// by one would answer the wrong set).
func (a *API) aclTokenList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n := 0
	for _, k := range []string{"policy", "role", "servicename", "authmethod"} {
		if q.Get(k) != "" {
			n++
		}
	}
	switch {
	case n > 1:
		a.writeError(w, r, badRequest("can only filter by one of policy, role, serviceName, or authMethod at a time"))
		return
	case q.Get("authmethod") != "":
		a.writeError(w, r, badRequest("authmethod: vmesh has no ACL auth methods"))
		return
	}
	res, err := a.aclRead(r, discovery.ACLQuery{Op: "tokens"})
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	policy, role, service := q.Get("policy"), q.Get("role"), q.Get("servicename")
	toks := slices.DeleteFunc(nonNilSlice(res.Tokens), func(t *acl.Token) bool {
		return (policy != "" && !slices.ContainsFunc(t.Policies, func(l acl.PolicyLink) bool { return l.ID == policy })) ||
			(role != "" && !slices.ContainsFunc(t.Roles, func(l acl.RoleLink) bool { return l.ID == role })) ||
			(service != "" && !slices.ContainsFunc(t.ServiceIdentities, func(s acl.ServiceIdentity) bool { return s.ServiceName == service }))
	})
	a.aclHeaders(w, res.Index)
	writeJSON(w, toks)
}
