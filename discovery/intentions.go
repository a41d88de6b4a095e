package discovery

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"
)

// Intentions are Consul's service-to-service authorization: a source
// service may (allow) or may not (deny) open connections to a destination
// service. Either side may be the wildcard "*". A pair is unique; when
// several intentions match a connection, the most specific one decides
// (Precedence), and when none does, the agent's configured default does.
//
// The catalog stores them in their own table with a Consul-shaped API
// (/v1/connect/intentions/exact, ...). vmesh has one namespace and one
// partition, so the only namespace and partition accepted is "default".

// Intention actions.
const (
	IntentionActionAllow = "allow"
	IntentionActionDeny  = "deny"
)

// IntentionWildcard matches every service. Only the whole name may be a
// wildcard, as in Consul.
const IntentionWildcard = "*"

// Intention is one stored intention.
type Intention struct {
	// ID is a UUID the API assigns when the pair is first written; it
	// stays while the pair exists (replacing an intention keeps it).
	ID              string
	SourceName      string
	DestinationName string
	Action          string
	Description     string
	Meta            map[string]string
	// CreatedAt and UpdatedAt are unix nanoseconds, stamped by the API
	// handler before the write goes to raft: the FSM reads no clock.
	CreatedAt   int64
	UpdatedAt   int64
	CreateIndex uint64
	ModifyIndex uint64
}

// IntentionPrecedence is Consul's precedence of a source/destination pair
// in the default namespace: an exact pair 9, a wildcard source 8, a
// wildcard destination 6, both wildcards 5. Higher wins.
func IntentionPrecedence(source, destination string) int {
	p := 9
	if destination == IntentionWildcard {
		p = 6
	}
	if source == IntentionWildcard {
		p--
	}
	return p
}

// Precedence is the intention's precedence (IntentionPrecedence).
func (ixn *Intention) Precedence() int {
	return IntentionPrecedence(ixn.SourceName, ixn.DestinationName)
}

// Allows reports whether the intention's action is allow.
func (ixn *Intention) Allows() bool { return ixn.Action == IntentionActionAllow }

func intentionNameMatches(pattern, name string) bool {
	return pattern == IntentionWildcard || strings.EqualFold(pattern, name)
}

// Matches reports whether the intention applies to a connection from
// source to destination (service names, matched case-insensitively as the
// catalog matches service names).
func (ixn *Intention) Matches(source, destination string) bool {
	return intentionNameMatches(ixn.SourceName, source) && intentionNameMatches(ixn.DestinationName, destination)
}

// SortIntentions orders intentions as Consul lists them: by precedence,
// highest first, then by source and destination name.
func SortIntentions(ixns []*Intention) {
	sort.SliceStable(ixns, func(i, j int) bool {
		a, b := ixns[i], ixns[j]
		if pa, pb := a.Precedence(), b.Precedence(); pa != pb {
			return pa > pb
		}
		if sa, sb := strings.ToLower(a.SourceName), strings.ToLower(b.SourceName); sa != sb {
			return sa < sb
		}
		return strings.ToLower(a.DestinationName) < strings.ToLower(b.DestinationName)
	})
}

// IntentionDecision says whether source may connect to destination: the
// matching intention with the highest precedence decides; with none,
// defaultAllow does. It returns the deciding intention, or nil when the
// default decided. A pair is unique, so two matching intentions never
// share a precedence.
func IntentionDecision(ixns []*Intention, source, destination string, defaultAllow bool) (bool, *Intention) {
	var best *Intention
	for _, ixn := range ixns {
		if ixn.Matches(source, destination) && (best == nil || ixn.Precedence() > best.Precedence()) {
			best = ixn
		}
	}
	if best == nil {
		return defaultAllow, nil
	}
	return best.Allows(), best
}

// ---- wire shapes (Consul's api.Intention) ----

// intentionJSON is an intention as Consul's API answers it.
type intentionJSON struct {
	ID              string
	Description     string `json:",omitempty"`
	SourceNS        string
	SourceName      string
	DestinationNS   string
	DestinationName string
	SourceType      string
	Action          string
	Meta            map[string]string `json:",omitempty"`
	Precedence      int
	CreatedAt       time.Time
	UpdatedAt       time.Time
	CreateIndex     uint64
	ModifyIndex     uint64
}

// MarshalJSON renders the intention in Consul's shape.
func (ixn *Intention) MarshalJSON() ([]byte, error) {
	return json.Marshal(&intentionJSON{
		ID: ixn.ID, Description: ixn.Description,
		SourceNS: "default", SourceName: ixn.SourceName,
		DestinationNS: "default", DestinationName: ixn.DestinationName,
		SourceType: "consul", Action: ixn.Action, Meta: ixn.Meta,
		Precedence: ixn.Precedence(),
		CreatedAt:  time.Unix(0, ixn.CreatedAt).UTC(), UpdatedAt: time.Unix(0, ixn.UpdatedAt).UTC(),
		CreateIndex: ixn.CreateIndex, ModifyIndex: ixn.ModifyIndex,
	})
}

// intentionBody is the body of PUT /v1/connect/intentions/exact: every
// field consul/api's Intention has, so that IntentionUpsert's body decodes
// strictly. The pair comes from the query; the read-only fields
// (Precedence, CreatedAt, UpdatedAt, Hash, the indexes) and the ones Consul
// itself ignores (DefaultAddr, DefaultPort) are accepted and ignored.
type intentionBody struct {
	ID                   string
	Description          string
	SourceNS             string
	SourceName           string
	DestinationNS        string
	DestinationName      string
	SourcePartition      string
	DestinationPartition string
	SourcePeer           string
	SourceSamenessGroup  string
	SourceType           string
	Action               string
	Permissions          json.RawMessage
	DefaultAddr          string
	DefaultPort          int
	Meta                 map[string]string
	Precedence           int
	CreatedAt            json.RawMessage
	UpdatedAt            json.RawMessage
	Hash                 json.RawMessage
	CreateIndex          uint64
	ModifyIndex          uint64
}

// Limits on an intention's Meta, as Consul's.
const (
	maxIntentionMetaPairs = 64
	maxIntentionMetaKey   = 128
	maxIntentionMetaValue = 512
)

// ParseIntentionName checks a source or destination as the query string
// carries it: a service name or "*", optionally prefixed with the default
// namespace ("default/web") or partition and namespace
// ("default/default/web"), as consul/api writes them. field names the
// parameter in errors, which wrap ErrInvalid.
func ParseIntentionName(field, v string) (string, error) {
	parts := strings.Split(v, "/")
	name := parts[len(parts)-1]
	var errs problems
	bad := func(format string, args ...any) { errs.bad(field, format, args...) }
	switch len(parts) {
	case 1:
	case 2, 3:
		for _, p := range parts[:len(parts)-1] {
			if p != "default" {
				bad("%q: only the default namespace and partition exist", v)
				break
			}
		}
	default:
		bad("%q is not a service name", v)
	}
	switch {
	case strings.TrimSpace(name) == "":
		bad("missing")
	case name == IntentionWildcard:
	case strings.Contains(name, "*"):
		bad("%q: only the whole name may be the wildcard *", name)
	case strings.ContainsAny(name, " \t\n"):
		bad("%q may not contain white space", name)
	}
	if err := errs.err(); err != nil {
		return "", err
	}
	return name, nil
}

// DecodeIntention decodes and validates the body of PUT
// /v1/connect/intentions/exact for the pair source -> destination (already
// checked with ParseIntentionName). Decoding is strict; every problem is
// reported, each naming its field; the error wraps ErrInvalid. The result
// has no ID or times: the caller assigns them.
func DecodeIntention(body []byte, source, destination string) (*Intention, error) {
	w, err := decodeIntentionBody(body)
	if err != nil {
		return nil, err
	}
	var errs problems
	bad := errs.bad
	if w.ID != "" {
		bad("ID", "must be empty: an intention is addressed by ?source= and ?destination=")
	}
	for _, f := range []struct{ field, body, query, param string }{
		{"SourceName", w.SourceName, source, "source"},
		{"DestinationName", w.DestinationName, destination, "destination"},
	} {
		if f.body != "" && !strings.EqualFold(f.body, f.query) {
			bad(f.field, "%q does not match ?%s=%q", f.body, f.param, f.query)
		}
	}
	w.validate(bad)
	if err := errs.err(); err != nil {
		return nil, err
	}
	return &Intention{
		SourceName: source, DestinationName: destination,
		Action: w.Action, Description: w.Description, Meta: w.Meta,
	}, nil
}

// decodeIntentionBody decodes an intention body strictly; an empty body
// is an empty intention.
func decodeIntentionBody(body []byte) (*intentionBody, error) {
	var w intentionBody
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&w); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, DecodeError(err))
		}
		if dec.More() {
			return nil, fmt.Errorf("%w: Request decode failed: trailing data after the JSON object", ErrInvalid)
		}
	}
	return &w, nil
}

// validate checks everything of an intention body but its ID and names.
func (w *intentionBody) validate(bad func(field, format string, args ...any)) {
	for _, f := range []struct{ field, v string }{
		{"SourceNS", w.SourceNS}, {"DestinationNS", w.DestinationNS},
		{"SourcePartition", w.SourcePartition}, {"DestinationPartition", w.DestinationPartition},
	} {
		defaultOnly(f.field, f.v, bad)
	}
	if w.SourcePeer != "" {
		bad("SourcePeer", "not supported: vmesh has no cluster peering")
	}
	if w.SourceSamenessGroup != "" {
		bad("SourceSamenessGroup", "not supported: vmesh has no sameness groups")
	}
	if w.SourceType != "" && w.SourceType != "consul" {
		bad("SourceType", "%q is not supported; only consul is", w.SourceType)
	}
	if !emptyRaw(w.Permissions) {
		bad("Permissions", "not supported yet: intentions allow or deny whole services (set Action)")
	}
	validateIntentionAction("Action", w.Action, bad)
	validateIntentionMeta("Meta", w.Meta, bad)
}

func validateIntentionAction(field, action string, bad func(field, format string, args ...any)) {
	switch action {
	case IntentionActionAllow, IntentionActionDeny:
	case "":
		bad(field, "missing: must be allow or deny")
	default:
		bad(field, "%q is not allow or deny", action)
	}
}

func validateIntentionMeta(field string, meta map[string]string, bad func(field, format string, args ...any)) {
	if len(meta) > maxIntentionMetaPairs {
		bad(field, "at most %d pairs, got %d", maxIntentionMetaPairs, len(meta))
	}
	for k, v := range meta {
		switch {
		case k == "":
			bad(field, "a key may not be empty")
		case len(k) > maxIntentionMetaKey:
			bad(field, "key %.20q... is longer than %d bytes", k, maxIntentionMetaKey)
		case len(v) > maxIntentionMetaValue:
			bad(field, "value of %q is longer than %d bytes", k, maxIntentionMetaValue)
		}
	}
}

// ---- store ----

const tableIntentions = "intentions"

func intentionTables(tables map[string]*memdb.TableSchema) {
	lower := func(field string) memdb.Indexer { return &memdb.StringFieldIndex{Field: field, Lowercase: true} }
	tables[tableIntentions] = &memdb.TableSchema{Name: tableIntentions, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
		// Names are case-insensitive, as service names are in the catalog.
		"pair": {Name: "pair", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
			lower("SourceName"), lower("DestinationName"),
		}}},
		"source":      {Name: "source", Indexer: lower("SourceName")},
		"destination": {Name: "destination", Indexer: lower("DestinationName")},
	}}
}

// IntentionOp is an intention write.
type IntentionOp string

// Intention operations. Both address the intention by its pair.
const (
	// IntentionUpsert creates the pair's intention or replaces it; a
	// replacement keeps the ID, CreateIndex and CreatedAt of the old one.
	IntentionUpsert IntentionOp = "upsert"
	// IntentionDelete removes the pair's intention; removing what is not
	// there is not an error, as in Consul.
	IntentionDelete IntentionOp = "delete"
	// IntentionCreate creates the pair's intention with the given ID and
	// fails when the pair already has one (Consul's legacy POST
	// /v1/connect/intentions).
	IntentionCreate IntentionOp = "create"
	// IntentionUpdate replaces the intention with Intention.ID, which
	// must exist; the pair may change to one no other intention holds
	// (Consul's legacy PUT /v1/connect/intentions/:id). It keeps the ID,
	// CreateIndex and CreatedAt.
	IntentionUpdate IntentionOp = "update"
	// IntentionSetDestination makes Sources the whole set of intentions
	// whose destination is Intention.DestinationName: a service-intentions
	// config entry. Pairs that stay keep their ID, CreateIndex and
	// CreatedAt; an empty Sources deletes them all.
	IntentionSetDestination IntentionOp = "set-destination"
)

// IntentionRequest writes an intention.
type IntentionRequest struct {
	Op        IntentionOp
	Intention Intention
	// Sources is the destination's new set for IntentionSetDestination.
	Sources []Intention
	// CAS, for IntentionSetDestination, applies the write only when the
	// destination's entry index (IntentionEntryIndex) is
	// Intention.ModifyIndex, as a config entry's ?cas= does.
	CAS bool
}

func (IntentionRequest) MessageType() MessageType { return IntentionType }

// IntentionApply performs op on ixn.
func (s *Store) IntentionApply(idx uint64, op IntentionOp, ixn *Intention) error {
	return s.IntentionApplyRequest(idx, &IntentionRequest{Op: op, Intention: *ixn})
}

// IntentionApplyRequest applies an intention write.
func (s *Store) IntentionApplyRequest(idx uint64, req *IntentionRequest) error {
	op, ixn := req.Op, &req.Intention
	db, _ := s.current()
	tx := db.Txn(true)
	defer tx.Abort()
	switch op {
	case IntentionUpdate:
		if err := intentionUpdate(tx, idx, ixn); err != nil {
			return err
		}
		return commitIntentions(tx, idx)
	case IntentionSetDestination:
		if err := intentionSetDestination(tx, idx, req); err != nil {
			return err
		}
		return commitIntentions(tx, idx)
	}
	if ixn.SourceName == "" || ixn.DestinationName == "" {
		return fmt.Errorf("%w: an intention needs a source and a destination", ErrInvalid)
	}
	raw, err := tx.First(tableIntentions, "pair", ixn.SourceName, ixn.DestinationName)
	if err != nil {
		return err
	}
	old, _ := raw.(*Intention)
	switch op {
	case IntentionCreate:
		if old != nil {
			return fmt.Errorf("%w: duplicate intention found: %s => %s already exists with ID %s", ErrInvalid, old.SourceName, old.DestinationName, old.ID)
		}
		if err := insertNewIntention(tx, idx, ixn); err != nil {
			return err
		}
	case IntentionUpsert:
		if ixn.Action != IntentionActionAllow && ixn.Action != IntentionActionDeny {
			return fmt.Errorf("%w: intention action %q is not allow or deny", ErrInvalid, ixn.Action)
		}
		c := *ixn
		c.CreateIndex, c.ModifyIndex = idx, idx
		if old != nil {
			c.ID, c.CreateIndex, c.CreatedAt = old.ID, old.CreateIndex, old.CreatedAt
			// The first spelling of the names stays, as for config entries.
			c.SourceName, c.DestinationName = old.SourceName, old.DestinationName
		} else {
			if c.ID == "" {
				return fmt.Errorf("%w: a new intention needs an ID", ErrInvalid)
			}
			if other, err := tx.First(tableIntentions, "id", c.ID); err != nil {
				return err
			} else if other != nil {
				return fmt.Errorf("%w: intention ID %s is taken", ErrInvalid, c.ID)
			}
		}
		if err := tx.Insert(tableIntentions, &c); err != nil {
			return err
		}
	case IntentionDelete:
		if old == nil {
			return nil
		}
		if err := tx.Delete(tableIntentions, old); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w: unknown intention operation %q", ErrInvalid, op)
	}
	return commitIntentions(tx, idx)
}

func commitIntentions(tx *memdb.Txn, idx uint64) error {
	if err := bumpIndex(tx, idx, tableIntentions); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

// Intentions lists every intention, ordered by SortIntentions.
func (s *Store) Intentions(ws memdb.WatchSet) (uint64, []*Intention, error) {
	tx := s.readTxn(ws)
	ixns, err := collect[Intention](ws, tx, tableIntentions, "id")
	SortIntentions(ixns)
	return maxIndex(tx, tableIntentions), ixns, err
}

// IntentionExact returns the intention of a pair, or nil.
func (s *Store) IntentionExact(ws memdb.WatchSet, source, destination string) (uint64, *Intention, error) {
	return s.intentionFirst(ws, "pair", source, destination)
}

// IntentionByID returns the intention with an ID, or nil.
func (s *Store) IntentionByID(ws memdb.WatchSet, id string) (uint64, *Intention, error) {
	return s.intentionFirst(ws, "id", id)
}

func (s *Store) intentionFirst(ws memdb.WatchSet, index string, args ...any) (uint64, *Intention, error) {
	tx := s.readTxn(ws)
	ch, raw, err := tx.FirstWatch(tableIntentions, index, args...)
	if ws != nil {
		ws.Add(ch)
	}
	idx := maxIndex(tx, tableIntentions)
	if err != nil || raw == nil {
		return idx, nil, err
	}
	return idx, raw.(*Intention), nil
}

// IntentionMatch lists, for name, the intentions whose source (by
// "source") or destination (by "destination") is name or the wildcard,
// ordered by SortIntentions.
func (s *Store) IntentionMatch(ws memdb.WatchSet, by, name string) (uint64, []*Intention, error) {
	if by != "source" && by != "destination" {
		return 0, nil, fmt.Errorf("%w: by: %q is not source or destination", ErrInvalid, by)
	}
	tx := s.readTxn(ws)
	names := []string{name}
	if name != IntentionWildcard {
		names = append(names, IntentionWildcard)
	}
	var out []*Intention
	for _, n := range names {
		ixns, err := collect[Intention](ws, tx, tableIntentions, by, n)
		if err != nil {
			return 0, nil, err
		}
		out = append(out, ixns...)
	}
	SortIntentions(out)
	return maxIndex(tx, tableIntentions), out, nil
}
