package httpapi

import (
	"io"
	"net/http"
	"strconv"

	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/discovery"
)

func (a *API) kvGet(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	q := r.URL.Query()
	_, recurse := q["recurse"]
	_, keys := q["keys"]
	_, raw := q["raw"]
	if a.RemoteKV != nil && !a.RemoteKV.HoldsKV() {
		a.kvGetRemote(w, r, key, keys, recurse, raw)
		return
	}
	authz, ok := a.allow(w, r, nil)
	if !ok {
		return
	}
	switch {
	case keys:
		var out []string
		if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
			idx, ks, err := a.Store.KVKeys(ws, key, q.Get("separator"))
			res := discovery.KVResult{Keys: ks}
			filtered, _ := discovery.AuthorizeKVRead(authz, discovery.KVQuery{Op: "keys"}, &res)
			out = res.Keys
			setFiltered(w, filtered)
			return idx, err
		}) {
			return
		}
		if len(out) == 0 {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		writeJSON(w, out)
	case recurse:
		var out []*discovery.KVEntry
		if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
			idx, es, err := a.Store.KVList(ws, key)
			res := discovery.KVResult{Entries: es}
			filtered, _ := discovery.AuthorizeKVRead(authz, discovery.KVQuery{Op: "list"}, &res)
			out = res.Entries
			setFiltered(w, filtered)
			return idx, err
		}) {
			return
		}
		if len(out) == 0 {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		writeJSON(w, toKVPairs(out))
	default:
		if err := authz.KeyRead(key); err != nil {
			a.writeError(w, r, err)
			return
		}
		var e *discovery.KVEntry
		if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
			idx, got, err := a.Store.KVGet(ws, key)
			e = got
			return idx, err
		}) {
			return
		}
		if e == nil {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		if raw {
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write(e.Value)
			return
		}
		writeJSON(w, toKVPairs([]*discovery.KVEntry{e}))
	}
}

func toKVPairs(es []*discovery.KVEntry) []*kvPair {
	out := make([]*kvPair, 0, len(es))
	for _, e := range es {
		out = append(out, &kvPair{
			Key: e.Key, CreateIndex: e.CreateIndex, ModifyIndex: e.ModifyIndex, LockIndex: e.LockIndex,
			Flags: e.Flags, Value: e.Value, Session: e.Session,
		})
	}
	return out
}

func uintParam(r *http.Request, name string) (uint64, bool, error) {
	s := r.URL.Query().Get(name)
	if _, ok := r.URL.Query()[name]; !ok {
		return 0, false, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, true, badRequest("Invalid %s: %q is not a number", name, s)
	}
	return v, true, nil
}

func (a *API) kvPut(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if key == "" {
		a.writeError(w, r, badRequest("Missing key name"))
		return
	}
	q := r.URL.Query()
	acquire, hasAcquire := q["acquire"]
	release, hasRelease := q["release"]
	if hasAcquire && hasRelease {
		a.writeError(w, r, badRequest("Conflicting flags: ?acquire and ?release"))
		return
	}
	flags, _, err := uintParam(r, "flags")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	cas, hasCAS, err := uintParam(r, "cas")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if r.ContentLength > maxKVSize {
		a.writeError(w, r, &HTTPError{Code: http.StatusRequestEntityTooLarge,
			Msg: "Request body(" + strconv.FormatInt(r.ContentLength, 10) + " bytes) too large, max size: 524288 bytes."})
		return
	}
	val, err := io.ReadAll(io.LimitReader(r.Body, maxKVSize+1))
	if err != nil {
		a.writeError(w, r, badRequest("reading value: %v", err))
		return
	}
	if len(val) > maxKVSize {
		a.writeError(w, r, &HTTPError{Code: http.StatusRequestEntityTooLarge, Msg: "Value exceeds 524288 byte limit"})
		return
	}
	switch {
	case hasAcquire:
		a.kvLock(w, r, discovery.TxnKVLock, acquire[0], discovery.TxnKVOp{Key: key, Flags: flags, Value: val}, cas, hasCAS)
		return
	case hasRelease:
		a.kvLock(w, r, discovery.TxnKVUnlock, release[0], discovery.TxnKVOp{Key: key, Flags: flags, Value: val}, cas, hasCAS)
		return
	}
	op := discovery.KVSet
	if hasCAS {
		op = discovery.KVCAS
	}
	a.kvWrite(w, r, discovery.KVRequest{Op: op, Entry: discovery.KVEntry{Key: key, Flags: flags, Value: val, ModifyIndex: cas}})
}

func (a *API) kvDelete(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	_, recurse := r.URL.Query()["recurse"]
	cas, hasCAS, err := uintParam(r, "cas")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	op := discovery.KVDelete
	switch {
	case recurse && hasCAS:
		a.writeError(w, r, badRequest("Conflicting flags: ?recurse and ?cas"))
		return
	case recurse:
		op = discovery.KVDeleteTree
	case hasCAS:
		op = discovery.KVDeleteCAS
	case key == "":
		a.writeError(w, r, badRequest("Missing key name"))
		return
	}
	a.kvWrite(w, r, discovery.KVRequest{Op: op, Entry: discovery.KVEntry{Key: key, ModifyIndex: cas}})
}

// kvWrite applies a KV request and answers true or false, as Consul does: a
// failed check-and-set is false with status 200.
func (a *API) kvWrite(w http.ResponseWriter, r *http.Request, req discovery.KVRequest) {
	_, err := a.apply(r, req)
	a.writeBool(w, r, err)
}

// kvGetRemote serves a KV read from a server (this agent holds no KV),
// with the same answers and headers as a local read.
func (a *API) kvGetRemote(w http.ResponseWriter, r *http.Request, key string, keys, recurse, raw bool) {
	q := discovery.KVQuery{Op: "get", Key: key}
	switch {
	case keys:
		q.Op, q.Separator = "keys", r.URL.Query().Get("separator")
	case recurse:
		q.Op = "list"
	}
	res, ok := a.kvReadRemote(w, r, q)
	if !ok {
		return
	}
	switch {
	case keys && len(res.Keys) == 0, !keys && len(res.Entries) == 0:
		w.WriteHeader(http.StatusNotFound)
	case keys:
		writeJSON(w, res.Keys)
	case raw && !recurse:
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(res.Entries[0].Value)
	default:
		writeJSON(w, toKVPairs(res.Entries))
	}
}

// setFiltered sets Consul's header that says the token could not read
// some of what matched (or clears it, for a blocking query's next round).
func setFiltered(w http.ResponseWriter, filtered bool) {
	if filtered {
		w.Header().Set("X-Consul-Results-Filtered-By-ACLs", "true")
	} else {
		w.Header().Del("X-Consul-Results-Filtered-By-ACLs")
	}
}

// kvReadRemote runs q on a server with the request's blocking and
// consistency parameters and token, and writes Consul's read headers. It
// returns false after writing an error.
func (a *API) kvReadRemote(w http.ResponseWriter, r *http.Request, q discovery.KVQuery) (discovery.KVResult, bool) {
	o, err := a.parseQuery(r)
	if err != nil {
		a.writeError(w, r, err)
		return discovery.KVResult{}, false
	}
	q.MinIndex, q.Wait, q.Consistent, q.Token = o.minIndex, o.wait, o.consistent, requestToken(r)
	res, err := a.RemoteKV.KVRead(r.Context(), q)
	if _, isACL := aclError(err); isACL {
		a.writeError(w, r, err)
		return discovery.KVResult{}, false
	}
	if err != nil {
		a.writeError(w, r, &HTTPError{Code: http.StatusInternalServerError, Msg: "reading KV from a server: " + err.Error(), Err: err})
		return discovery.KVResult{}, false
	}
	setFiltered(w, res.Filtered)
	w.Header().Set("X-Consul-Index", strconv.FormatUint(max(res.Index, 1), 10))
	w.Header().Set("X-Consul-KnownLeader", strconv.FormatBool(res.KnownLeader))
	w.Header().Set("X-Consul-LastContact", strconv.FormatInt(res.LastContact.Milliseconds(), 10))
	return res, true
}

// kvLock serves ?acquire and ?release: a transaction of one lock or
// unlock, after a check of ?cas when there is one (which Consul ignores
// with a lock; here it must match too). It answers true, or false when
// the key is held by another session, in its lock-delay, or not held by
// this one; a session that does not exist is a 400.
func (a *API) kvLock(w http.ResponseWriter, r *http.Request, verb, session string, op discovery.TxnKVOp, cas uint64, hasCAS bool) {
	if session == "" {
		p := "acquire"
		if verb == discovery.TxnKVUnlock {
			p = "release"
		}
		a.writeError(w, r, badRequest("?%s: missing session ID", p))
		return
	}
	var ops []discovery.TxnKVOp
	switch {
	case hasCAS && cas == 0:
		ops = append(ops, discovery.TxnKVOp{Verb: discovery.TxnKVCheckNotExists, Key: op.Key})
	case hasCAS:
		ops = append(ops, discovery.TxnKVOp{Verb: discovery.TxnKVCheckIndex, Key: op.Key, Index: cas})
	}
	op.Verb, op.Session = verb, session
	_, res, err := a.applyTxn(r, discovery.TxnRequest{Ops: append(ops, op)})
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	for _, e := range res.Errors {
		if e.Kind == discovery.TxnInvalid {
			a.writeError(w, r, badRequest("%s", e.What))
			return
		}
	}
	writeJSON(w, len(res.Errors) == 0)
}
