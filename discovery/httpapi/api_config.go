package httpapi

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
)

// registerConfig adds Consul's /v1/config endpoints.
func (a *API) registerConfig(mux *http.ServeMux) {
	mux.HandleFunc("PUT /v1/config", a.configApply)
	mux.HandleFunc("GET /v1/config/{kind}", a.configList)
	mux.HandleFunc("GET /v1/config/{kind}/{name}", a.configGet)
	mux.HandleFunc("DELETE /v1/config/{kind}/{name}", a.configDelete)
}

// casParam reads ?cas=N; ok is false when it is absent.
func casParam(r *http.Request) (idx uint64, ok bool, err error) {
	s, ok := r.URL.Query()["cas"]
	if !ok {
		return 0, false, nil
	}
	v, err := strconv.ParseUint(s[0], 10, 64)
	if err != nil {
		return 0, false, badRequest("Invalid cas index: %q is not a number", s[0])
	}
	return v, true, nil
}

func validKind(kind string) error {
	if !slices.Contains(discovery.ConfigEntryKinds, kind) && kind != discovery.KindServiceIntentions {
		return badRequest("Kind: %q is not supported; one of %s, %s", kind, strings.Join(discovery.ConfigEntryKinds, ", "), discovery.KindServiceIntentions)
	}
	return nil
}

// writeBool answers a write as Consul does: true, or false when a
// check-and-set did not match.
func (a *API) writeBool(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, discovery.ErrCASConflict) {
		writeJSON(w, false)
		return
	}
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, true)
}

func (a *API) configApply(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		a.writeError(w, r, badRequest("Request decode failed: empty body"))
		return
	}
	if configKindOf(body) == discovery.KindServiceIntentions {
		a.serviceIntentionsApply(w, r, body)
		return
	}
	e, err := discovery.DecodeConfigEntry(body)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	req := discovery.ConfigEntryRequest{Op: discovery.ConfigEntryUpsert, Entry: *e}
	cas, isCAS, err := casParam(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if isCAS {
		req.Op, req.Entry.ModifyIndex = discovery.ConfigEntryUpsertCAS, cas
	}
	_, err = a.apply(r, req)
	a.writeBool(w, r, err)
}

func (a *API) configGet(w http.ResponseWriter, r *http.Request) {
	kind, name := r.PathValue("kind"), r.PathValue("name")
	if err := validKind(kind); err != nil {
		a.writeError(w, r, err)
		return
	}
	if kind == discovery.KindServiceIntentions {
		a.serviceIntentionsGet(w, r, name)
		return
	}
	// Checked before the lookup, as Consul does: a token that may not
	// read the entry learns nothing of whether it exists.
	if _, ok := a.allow(w, r, func(z *acl.Authorizer) error { return discovery.AuthorizeConfigEntryRead(z, kind, name) }); !ok {
		return
	}
	readOne(a, w, r, func(ws memdb.WatchSet) (uint64, *discovery.ConfigEntry, error) {
		return a.Store.ConfigEntry(ws, kind, name)
	}, func() error { return notFound("Config entry not found for %q / %q", kind, name) })
}

func (a *API) configList(w http.ResponseWriter, r *http.Request) {
	kind := r.PathValue("kind")
	if err := validKind(kind); err != nil {
		a.writeError(w, r, err)
		return
	}
	if kind == discovery.KindServiceIntentions {
		a.serviceIntentionsList(w, r)
		return
	}
	authz, ok := a.allow(w, r, nil)
	if !ok {
		return
	}
	var out []*discovery.ConfigEntry
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, entries, err := a.Store.ConfigEntries(ws, kind)
		var filtered bool
		out, filtered = keep(entries, func(e *discovery.ConfigEntry) bool { return configEntryReadable(authz, e) })
		setFiltered(w, filtered)
		return idx, err
	}) {
		return
	}
	writeJSON(w, nonNil(out))
}

func (a *API) configDelete(w http.ResponseWriter, r *http.Request) {
	kind, name := r.PathValue("kind"), r.PathValue("name")
	if err := validKind(kind); err != nil {
		a.writeError(w, r, err)
		return
	}
	if kind == discovery.KindServiceIntentions {
		a.serviceIntentionsDelete(w, r, name)
		return
	}
	req := discovery.ConfigEntryRequest{Op: discovery.ConfigEntryDelete, Entry: discovery.ConfigEntry{Kind: kind, Name: name}}
	cas, isCAS, err := casParam(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if isCAS {
		req.Op, req.Entry.ModifyIndex = discovery.ConfigEntryDeleteCAS, cas
	}
	_, err = a.apply(r, req)
	a.writeBool(w, r, err)
}
