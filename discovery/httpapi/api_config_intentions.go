package httpapi

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
)

// Config entries of kind service-intentions are not stored as config
// entries: each is the set of intentions to one destination, read from
// and written to the intentions table (discovery/intentions_legacy.go),
// so the entry, the exact API and the legacy ID API show one state.

// configKindOf reads a config entry body's Kind.
func configKindOf(body []byte) string {
	var head struct{ Kind string }
	_ = json.Unmarshal(body, &head) // a bad body fails in the kind's decoder
	return head.Kind
}

// serviceIntentionsApply writes a service-intentions entry: the
// destination's intentions become its Sources. New pairs get an ID here
// (the FSM picks none); pairs that stay keep theirs.
func (a *API) serviceIntentionsApply(w http.ResponseWriter, r *http.Request, body []byte) {
	dst, sources, err := discovery.DecodeServiceIntentions(body)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	now := time.Now().UnixNano()
	for i := range sources {
		sources[i].ID, sources[i].CreatedAt, sources[i].UpdatedAt = newUUID(), now, now
	}
	req := discovery.IntentionRequest{
		Op: discovery.IntentionSetDestination, Intention: discovery.Intention{DestinationName: dst}, Sources: sources,
	}
	cas, isCAS, err := casParam(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	req.CAS, req.Intention.ModifyIndex = isCAS, cas
	_, err = a.apply(r, req)
	a.writeBool(w, r, err)
}

func (a *API) serviceIntentionsGet(w http.ResponseWriter, r *http.Request, name string) {
	dst, err := discovery.ParseIntentionName("name", name)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if _, ok := a.allow(w, r, func(z *acl.Authorizer) error { return z.IntentionRead(dst) }); !ok {
		return
	}
	readOne(a, w, r, func(ws memdb.WatchSet) (uint64, *discovery.ServiceIntentions, error) {
		return a.Store.ServiceIntentionsEntry(ws, dst)
	}, func() error {
		return notFound("Config entry not found for %q / %q", discovery.KindServiceIntentions, name)
	})
}

// serviceIntentionsList lists the entries whose destination the token
// may read intentions of.
func (a *API) serviceIntentionsList(w http.ResponseWriter, r *http.Request) {
	authz, ok := a.allow(w, r, nil)
	if !ok {
		return
	}
	var out []*discovery.ServiceIntentions
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, entries, err := a.Store.ServiceIntentionsEntries(ws)
		var filtered bool
		out, filtered = keep(entries, func(e *discovery.ServiceIntentions) bool { return authz.IntentionRead(e.Name) == nil })
		setFiltered(w, filtered)
		return idx, err
	}) {
		return
	}
	writeJSON(w, nonNil(out))
}

func (a *API) serviceIntentionsDelete(w http.ResponseWriter, r *http.Request, name string) {
	dst, err := discovery.ParseIntentionName("name", name)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	req := discovery.IntentionRequest{Op: discovery.IntentionSetDestination, Intention: discovery.Intention{DestinationName: dst}}
	cas, isCAS, err := casParam(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	req.CAS, req.Intention.ModifyIndex = isCAS, cas
	_, err = a.apply(r, req)
	a.writeBool(w, r, err)
}
