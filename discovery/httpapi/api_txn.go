package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/vmesh/vmesh/discovery"
)

// maxTxnBody is Consul's default txn_max_req_len: a transaction request
// of at most 512 KiB.
const maxTxnBody = 512 * 1024

// txnOpBody is one operation of PUT /v1/txn. Only KV operations are
// served; the catalog ones decode so that the answer can say so.
type txnOpBody struct {
	KV      *txnKVBody
	Node    json.RawMessage
	Service json.RawMessage
	Check   json.RawMessage
	Session json.RawMessage
}

type txnKVBody struct {
	Verb      string
	Key       string
	Value     []byte
	Flags     uint64
	Index     uint64
	Session   string
	Namespace string
	Partition string
}

type txnResultBody struct {
	KV *kvPair
}

type txnErrorBody struct {
	OpIndex int
	What    string
}

type txnResponseBody struct {
	Results []*txnResultBody
	Errors  []*txnErrorBody
}

func present(raw json.RawMessage) bool {
	return len(raw) > 0 && string(raw) != "null"
}

// parseTxn checks a transaction before it goes to raft: each operation's
// problems are reported by its index, as Consul's 409 does.
func parseTxn(body []byte) (discovery.TxnRequest, []*txnErrorBody, error) {
	var ops []txnOpBody
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ops); err != nil {
		return discovery.TxnRequest{}, nil, decodeError(err)
	}
	if dec.More() {
		return discovery.TxnRequest{}, nil, badRequest("Request decode failed: trailing data after the JSON array")
	}
	if len(ops) > discovery.MaxTxnOps {
		return discovery.TxnRequest{}, nil, &HTTPError{Code: http.StatusRequestEntityTooLarge,
			Msg: fmt.Sprintf("Transaction contains too many operations (%d > %d)", len(ops), discovery.MaxTxnOps)}
	}
	var req discovery.TxnRequest
	var errs []*txnErrorBody
	bad := func(i int, format string, args ...any) {
		errs = append(errs, &txnErrorBody{OpIndex: i, What: fmt.Sprintf(format, args...)})
	}
	for i, op := range ops {
		switch {
		case present(op.Node) || present(op.Service) || present(op.Check) || present(op.Session):
			bad(i, "only KV operations are supported in a transaction; node, service, check and session operations are not")
			continue
		case op.KV == nil:
			bad(i, "empty operation: want a KV operation")
			continue
		}
		kv := op.KV
		switch {
		case !slices.Contains(discovery.TxnKVVerbs, kv.Verb):
			bad(i, "unknown KV verb %q; one of %s", kv.Verb, strings.Join(discovery.TxnKVVerbs, ", "))
		case len(kv.Value) > maxKVSize:
			bad(i, "value for key %q is too large (%d > %d bytes)", kv.Key, len(kv.Value), maxKVSize)
		case kv.Namespace != "" && kv.Namespace != "default":
			bad(i, "Namespace %q is not supported; only the default", kv.Namespace)
		case kv.Partition != "" && kv.Partition != "default":
			bad(i, "Partition %q is not supported; only the default", kv.Partition)
		}
		req.Ops = append(req.Ops, discovery.TxnKVOp{Verb: kv.Verb, Key: kv.Key, Value: kv.Value, Flags: kv.Flags, Index: kv.Index, Session: kv.Session})
	}
	return req, errs, nil
}

// txn serves PUT /v1/txn: the operations apply together through raft or
// not at all; 200 with every result, or 409 with the errors of the
// operations that failed.
func (a *API) txn(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(limitBody(w, r, maxTxnBody))
	if err != nil {
		a.writeError(w, r, bodyError(err))
		return
	}
	req, errs, err := parseTxn(body)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	// Each operation the token does not allow fails on its own, in the
	// 409, as Consul answers it.
	authz, err := a.authorizer(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	for i := range req.Ops {
		if err := discovery.AuthorizeTxnOp(authz, &req.Ops[i]); err != nil {
			errs = append(errs, &txnErrorBody{OpIndex: i, What: err.Error()})
		}
	}
	if len(errs) > 0 {
		slices.SortStableFunc(errs, func(x, y *txnErrorBody) int { return x.OpIndex - y.OpIndex })
		writeTxn(w, http.StatusConflict, &txnResponseBody{Errors: errs})
		return
	}
	_, res, err := a.applyTxn(r, req)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if len(res.Errors) > 0 {
		out := &txnResponseBody{}
		for _, e := range res.Errors {
			out.Errors = append(out.Errors, &txnErrorBody{OpIndex: e.OpIndex, What: e.What})
		}
		writeTxn(w, http.StatusConflict, out)
		return
	}
	out := &txnResponseBody{}
	for _, p := range toKVPairs(res.Results) {
		out.Results = append(out.Results, &txnResultBody{KV: p})
	}
	writeTxn(w, http.StatusOK, out)
}

func writeTxn(w http.ResponseWriter, code int, body *txnResponseBody) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(body)
}
