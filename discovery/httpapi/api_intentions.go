package httpapi

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
)

// registerIntentions adds Consul's /v1/connect/intentions endpoints: the
// exact (by source and destination) ones consul/api uses today, list,
// check and match, and the legacy ones by ID (create, read, update,
// delete) that `consul intention create` and `get ID` still use.
func (a *API) registerIntentions(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/connect/intentions", a.intentionList)
	mux.HandleFunc("POST /v1/connect/intentions", a.intentionCreate)
	mux.HandleFunc("GET /v1/connect/intentions/exact", a.intentionGetExact)
	mux.HandleFunc("PUT /v1/connect/intentions/exact", a.intentionPutExact)
	mux.HandleFunc("DELETE /v1/connect/intentions/exact", a.intentionDeleteExact)
	mux.HandleFunc("GET /v1/connect/intentions/check", a.intentionCheck)
	mux.HandleFunc("GET /v1/connect/intentions/match", a.intentionMatch)
	mux.HandleFunc("GET /v1/connect/intentions/{id}", a.intentionGetByID)
	mux.HandleFunc("PUT /v1/connect/intentions/{id}", a.intentionUpdate)
	mux.HandleFunc("DELETE /v1/connect/intentions/{id}", a.intentionDeleteByID)
}

// intentionPair reads ?source= and ?destination=, both required.
func intentionPair(r *http.Request) (source, destination string, err error) {
	q := r.URL.Query()
	for _, p := range []struct {
		param string
		out   *string
	}{{"source", &source}, {"destination", &destination}} {
		v, ok := q[p.param]
		if !ok || v[0] == "" {
			return "", "", badRequest("required query parameter '%s' not set", p.param)
		}
		if *p.out, err = discovery.ParseIntentionName(p.param, v[0]); err != nil {
			return "", "", err
		}
	}
	return source, destination, nil
}

// newUUID is a random (version 4) UUID, as Consul's intention and
// session IDs.
func newUUID() string {
	var u [16]byte
	rand.Read(u[:])
	u[6] = (u[6] & 0x0f) | 0x40
	u[8] = (u[8] & 0x3f) | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:])
}

func (a *API) intentionPutExact(w http.ResponseWriter, r *http.Request) {
	src, dst, err := intentionPair(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	body, err := readBody(w, r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	ixn, err := discovery.DecodeIntention(body, src, dst)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	// The ID and times are chosen here, not in the FSM, which must be
	// deterministic; the store keeps the old ID and creation time when
	// the pair already exists.
	now := time.Now().UnixNano()
	ixn.ID, ixn.CreatedAt, ixn.UpdatedAt = newUUID(), now, now
	if _, err := a.apply(r, discovery.IntentionRequest{Op: discovery.IntentionUpsert, Intention: *ixn}); err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, true)
}

func (a *API) intentionGetExact(w http.ResponseWriter, r *http.Request) {
	src, dst, err := intentionPair(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	// Checked before the lookup: the pair is known, and a token that may
	// read neither end learns nothing of whether it exists.
	if _, ok := a.allow(w, r, func(z *acl.Authorizer) error {
		if z.IntentionRead(src) == nil {
			return nil
		}
		return z.IntentionRead(dst)
	}); !ok {
		return
	}
	readOne(a, w, r, func(ws memdb.WatchSet) (uint64, *discovery.Intention, error) {
		return a.Store.IntentionExact(ws, src, dst)
	}, func() error { return notFound("Intention not found: %s => %s", src, dst) })
}

func (a *API) intentionDeleteExact(w http.ResponseWriter, r *http.Request) {
	src, dst, err := intentionPair(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	a.intentionDelete(w, r, src, dst)
}

func (a *API) intentionDelete(w http.ResponseWriter, r *http.Request, src, dst string) {
	req := discovery.IntentionRequest{Op: discovery.IntentionDelete, Intention: discovery.Intention{SourceName: src, DestinationName: dst}}
	if _, err := a.apply(r, req); err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, true)
}

// intentionList lists the intentions the token may read at either end.
func (a *API) intentionList(w http.ResponseWriter, r *http.Request) {
	authz, ok := a.allow(w, r, nil)
	if !ok {
		return
	}
	var out []*discovery.Intention
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, ixns, err := a.Store.Intentions(ws)
		var filtered bool
		out, filtered = keep(ixns, func(ixn *discovery.Intention) bool { return intentionReadable(authz, ixn) })
		setFiltered(w, filtered)
		return idx, err
	}) {
		return
	}
	writeJSON(w, nonNil(out))
}

// intentionCheck answers whether source may connect to destination, from
// the intentions and this agent's intentions_default. It needs only
// service:read on the destination, as in Consul: the answer is a yes or
// no that shows no intention.
func (a *API) intentionCheck(w http.ResponseWriter, r *http.Request) {
	src, dst, err := intentionPair(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	for _, p := range []struct{ param, v string }{{"source", src}, {"destination", dst}} {
		if p.v == discovery.IntentionWildcard {
			a.writeError(w, r, badRequest("%s: must name a service, not the wildcard", p.param))
			return
		}
	}
	if st := r.URL.Query().Get("source-type"); st != "" && st != "consul" {
		a.writeError(w, r, badRequest("source-type: %q is not supported; only consul is", st))
		return
	}
	if _, ok := a.allow(w, r, func(z *acl.Authorizer) error { return z.ServiceRead(dst) }); !ok {
		return
	}
	var allowed bool
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, ixns, err := a.Store.IntentionMatch(ws, "destination", dst)
		allowed, _ = discovery.IntentionDecision(ixns, src, dst, a.IntentionsDefaultAllow)
		return idx, err
	}) {
		return
	}
	writeJSON(w, struct{ Allowed bool }{allowed})
}

// intentionMatch lists, for each ?name=, the intentions whose source or
// destination (?by=) matches it, highest precedence first. It needs
// intention:read on every name asked, as in Consul (a 403 otherwise, not
// a filtered answer).
func (a *API) intentionMatch(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	by := q.Get("by")
	if by != "source" && by != "destination" {
		a.writeError(w, r, badRequest("by: %q is not source or destination", by))
		return
	}
	names := q["name"]
	if len(names) == 0 {
		a.writeError(w, r, badRequest("required query parameter 'name' not set"))
		return
	}
	for _, n := range names {
		if _, err := discovery.ParseIntentionName("name", n); err != nil {
			a.writeError(w, r, err)
			return
		}
	}
	if _, ok := a.allow(w, r, func(z *acl.Authorizer) error {
		for _, n := range names {
			name, _ := discovery.ParseIntentionName("name", n)
			if err := z.IntentionRead(name); err != nil {
				return err
			}
		}
		return nil
	}); !ok {
		return
	}
	out := map[string][]*discovery.Intention{}
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		var idx uint64
		for _, n := range names {
			name, _ := discovery.ParseIntentionName("name", n)
			i, ixns, err := a.Store.IntentionMatch(ws, by, name)
			if err != nil {
				return i, err
			}
			idx = max(idx, i)
			// Keyed by the name as asked, as Consul does.
			out[n] = nonNil(ixns)
		}
		return idx, nil
	}) {
		return
	}
	writeJSON(w, out)
}

func (a *API) intentionGetByID(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	authz, ok := a.allow(w, r, nil)
	if !ok {
		return
	}
	var out *discovery.Intention
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, ixn, err := a.Store.IntentionByID(ws, id)
		out = ixn
		return idx, err
	}) {
		return
	}
	if out == nil {
		a.writeError(w, r, notFound("Intention not found: %s", id))
		return
	}
	if !intentionReadable(authz, out) {
		a.writeError(w, r, authz.IntentionRead(out.DestinationName))
		return
	}
	writeJSON(w, out)
}

func (a *API) intentionDeleteByID(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	_, ixn, err := a.Store.IntentionByID(nil, id)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if ixn == nil {
		a.writeError(w, r, notFound("Intention not found: %s", id))
		return
	}
	a.intentionDelete(w, r, ixn.SourceName, ixn.DestinationName)
}

// intentionCreate is Consul's legacy create: the pair is in the body, the
// agent picks the ID and answers it; a pair that already has an
// intention is refused, as Consul refuses a duplicate.
func (a *API) intentionCreate(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	ixn, err := discovery.DecodeLegacyIntention(body, "")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	now := time.Now().UnixNano()
	ixn.ID, ixn.CreatedAt, ixn.UpdatedAt = newUUID(), now, now
	if _, err := a.apply(r, discovery.IntentionRequest{Op: discovery.IntentionCreate, Intention: *ixn}); err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, struct{ ID string }{ixn.ID})
}

// intentionUpdate is Consul's legacy update by ID: the body replaces the
// intention, which keeps its ID (and may move to another pair no other
// intention holds). It needs intention:write on the new destination and,
// when it moves, the old one.
func (a *API) intentionUpdate(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	body, err := readBody(w, r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	ixn, err := discovery.DecodeLegacyIntention(body, id)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	ixn.ID, ixn.UpdatedAt = id, time.Now().UnixNano()
	if _, err := a.apply(r, discovery.IntentionRequest{Op: discovery.IntentionUpdate, Intention: *ixn}); err != nil {
		if errors.Is(err, discovery.ErrNotFound) {
			err = notFound("Cannot modify non-existent intention: %q", id)
		}
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, struct{ ID string }{id})
}
