package discovery

import (
	"fmt"

	"github.com/hashicorp/go-memdb"
)

// Query is a read of what a client's replica does not hold (KV and
// sessions, replica.go), in a shape that can travel: the HTTP API runs it
// on the local catalog, or, on a client, a server runs it for it (raft's
// Read RPC), with the same code either way.
type Query struct {
	Kind QueryKind
	// Key is the key (kv-get) or the prefix (kv-list, kv-keys).
	Key       string
	Separator string // kv-keys
	Session   string // session-info
	Node      string // session-node
}

// QueryKind says what a Query reads.
type QueryKind string

// Query kinds.
const (
	QueryKVGet       QueryKind = "kv-get"
	QueryKVList      QueryKind = "kv-list"
	QueryKVKeys      QueryKind = "kv-keys"
	QuerySessionInfo QueryKind = "session-info"
	QuerySessionList QueryKind = "session-list"
	QuerySessionNode QueryKind = "session-node"
)

// QueryResult is what a Query found, at Index.
type QueryResult struct {
	Index    uint64
	KV       []*KVEntry `json:",omitempty"`
	Keys     []string   `json:",omitempty"`
	Sessions []*Session `json:",omitempty"`
}

// Query runs q, adding what it depends on to ws.
func (s *Store) Query(ws memdb.WatchSet, q Query) (*QueryResult, error) {
	res := &QueryResult{}
	var err error
	switch q.Kind {
	case QueryKVGet:
		var e *KVEntry
		res.Index, e, err = s.KVGet(ws, q.Key)
		if e != nil {
			res.KV = []*KVEntry{e}
		}
	case QueryKVList:
		res.Index, res.KV, err = s.KVList(ws, q.Key)
	case QueryKVKeys:
		res.Index, res.Keys, err = s.KVKeys(ws, q.Key, q.Separator)
	case QuerySessionInfo:
		var sess *Session
		res.Index, sess, err = s.Session(ws, q.Session)
		if sess != nil {
			res.Sessions = []*Session{sess}
		}
	case QuerySessionList:
		res.Index, res.Sessions, err = s.Sessions(ws)
	case QuerySessionNode:
		res.Index, res.Sessions, err = s.NodeSessions(ws, q.Node)
	default:
		return nil, fmt.Errorf("%w: unknown query kind %q", ErrInvalid, q.Kind)
	}
	return res, err
}
