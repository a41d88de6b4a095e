package discovery

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"
)

// Two more views of the intentions table, both as Consul has them:
//
//   - the legacy ID API (POST /v1/connect/intentions, PUT and DELETE
//     /v1/connect/intentions/:id), which `consul intention create` still
//     uses: IntentionCreate and IntentionUpdate;
//   - config entries of kind service-intentions, one per destination,
//     whose Sources are the intentions to that destination:
//     IntentionSetDestination writes one, ServiceIntentionsEntry reads it.
//
// Both write the same rows the exact API does, so every view agrees and
// an intention keeps its ID whichever view rewrites it.

// KindServiceIntentions is the config entry kind backed by the
// intentions table.
const KindServiceIntentions = "service-intentions"

func insertNewIntention(tx *memdb.Txn, idx uint64, ixn *Intention) error {
	if ixn.ID == "" {
		return fmt.Errorf("%w: a new intention needs an ID", ErrInvalid)
	}
	if ixn.Action != IntentionActionAllow && ixn.Action != IntentionActionDeny {
		return fmt.Errorf("%w: intention action %q is not allow or deny", ErrInvalid, ixn.Action)
	}
	if other, err := tx.First(tableIntentions, "id", ixn.ID); err != nil {
		return err
	} else if other != nil {
		return fmt.Errorf("%w: intention ID %s is taken", ErrInvalid, ixn.ID)
	}
	c := *ixn
	c.CreateIndex, c.ModifyIndex = idx, idx
	return tx.Insert(tableIntentions, &c)
}

func intentionUpdate(tx *memdb.Txn, idx uint64, ixn *Intention) error {
	if ixn.SourceName == "" || ixn.DestinationName == "" {
		return fmt.Errorf("%w: an intention needs a source and a destination", ErrInvalid)
	}
	if ixn.Action != IntentionActionAllow && ixn.Action != IntentionActionDeny {
		return fmt.Errorf("%w: intention action %q is not allow or deny", ErrInvalid, ixn.Action)
	}
	raw, err := tx.First(tableIntentions, "id", ixn.ID)
	if err != nil {
		return err
	}
	old, _ := raw.(*Intention)
	if old == nil {
		return fmt.Errorf("%w: intention %q", ErrNotFound, ixn.ID)
	}
	if raw, err := tx.First(tableIntentions, "pair", ixn.SourceName, ixn.DestinationName); err != nil {
		return err
	} else if other, _ := raw.(*Intention); other != nil && other.ID != old.ID {
		return fmt.Errorf("%w: duplicate intention found: %s => %s already exists with ID %s", ErrInvalid, other.SourceName, other.DestinationName, other.ID)
	}
	c := *ixn
	c.CreateIndex, c.CreatedAt, c.ModifyIndex = old.CreateIndex, old.CreatedAt, idx
	if strings.EqualFold(c.SourceName, old.SourceName) && strings.EqualFold(c.DestinationName, old.DestinationName) {
		c.SourceName, c.DestinationName = old.SourceName, old.DestinationName
	}
	if err := tx.Delete(tableIntentions, old); err != nil {
		return err
	}
	return tx.Insert(tableIntentions, &c)
}

func intentionSetDestination(tx *memdb.Txn, idx uint64, req *IntentionRequest) error {
	dst := req.Intention.DestinationName
	if dst == "" {
		return fmt.Errorf("%w: a service-intentions entry needs a destination", ErrInvalid)
	}
	olds, err := collect[Intention](nil, tx, tableIntentions, "destination", dst)
	if err != nil {
		return err
	}
	if req.CAS && entryIndex(olds) != req.Intention.ModifyIndex {
		return ErrCASConflict
	}
	bySource := map[string]*Intention{}
	for _, o := range olds {
		bySource[strings.ToLower(o.SourceName)] = o
		if err := tx.Delete(tableIntentions, o); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for i := range req.Sources {
		c := req.Sources[i]
		key := strings.ToLower(c.SourceName)
		if c.SourceName == "" || seen[key] {
			return fmt.Errorf("%w: Sources[%d].Name: missing or listed twice", ErrInvalid, i)
		}
		seen[key] = true
		c.DestinationName = dst
		if old := bySource[key]; old != nil {
			c.ID, c.CreateIndex, c.CreatedAt = old.ID, old.CreateIndex, old.CreatedAt
			c.SourceName, c.DestinationName = old.SourceName, old.DestinationName
			c.ModifyIndex = idx
			if c.Action != IntentionActionAllow && c.Action != IntentionActionDeny {
				return fmt.Errorf("%w: intention action %q is not allow or deny", ErrInvalid, c.Action)
			}
			if err := tx.Insert(tableIntentions, &c); err != nil {
				return err
			}
			continue
		}
		if err := insertNewIntention(tx, idx, &c); err != nil {
			return err
		}
	}
	return nil
}

// entryIndex is a service-intentions entry's ModifyIndex: the newest of
// its intentions' (0 when it has none).
func entryIndex(ixns []*Intention) uint64 {
	var m uint64
	for _, ixn := range ixns {
		m = max(m, ixn.ModifyIndex)
	}
	return m
}

// ServiceIntentions is a service-intentions config entry: the
// intentions whose destination is Name, as one record.
type ServiceIntentions struct {
	Name    string
	Sources []*Intention
}

// ServiceIntentionsEntry returns the service-intentions entry of
// destination, or nil when no intention names it.
func (s *Store) ServiceIntentionsEntry(ws memdb.WatchSet, destination string) (uint64, *ServiceIntentions, error) {
	tx := s.readTxn(ws)
	ixns, err := collect[Intention](ws, tx, tableIntentions, "destination", destination)
	idx := maxIndex(tx, tableIntentions)
	if err != nil || len(ixns) == 0 {
		return idx, nil, err
	}
	SortIntentions(ixns)
	return idx, &ServiceIntentions{Name: ixns[0].DestinationName, Sources: ixns}, nil
}

// ServiceIntentionsEntries returns every service-intentions entry, by
// destination name.
func (s *Store) ServiceIntentionsEntries(ws memdb.WatchSet) (uint64, []*ServiceIntentions, error) {
	idx, ixns, err := s.Intentions(ws)
	if err != nil {
		return idx, nil, err
	}
	byDst := map[string]*ServiceIntentions{}
	var out []*ServiceIntentions
	for _, ixn := range ixns {
		key := strings.ToLower(ixn.DestinationName)
		e := byDst[key]
		if e == nil {
			e = &ServiceIntentions{Name: ixn.DestinationName}
			byDst[key] = e
			out = append(out, e)
		}
		e.Sources = append(e.Sources, ixn)
	}
	sort.Slice(out, func(i, j int) bool { return strings.ToLower(out[i].Name) < strings.ToLower(out[j].Name) })
	return idx, out, nil
}

// ---- wire shapes (Consul's api.ServiceIntentionsConfigEntry) ----

type sourceIntentionJSON struct {
	Name             string
	Peer             string            `json:",omitempty"`
	Partition        string            `json:",omitempty"`
	Namespace        string            `json:",omitempty"`
	SamenessGroup    string            `json:",omitempty"`
	Action           string            `json:",omitempty"`
	Permissions      json.RawMessage   `json:",omitempty"`
	Precedence       int               `json:",omitempty"`
	Type             string            `json:",omitempty"`
	Description      string            `json:",omitempty"`
	LegacyID         string            `json:",omitempty"`
	LegacyMeta       map[string]string `json:",omitempty"`
	LegacyCreateTime *time.Time        `json:",omitempty"`
	LegacyUpdateTime *time.Time        `json:",omitempty"`
}

type serviceIntentionsJSON struct {
	Kind        string
	Name        string
	Partition   string `json:",omitempty"`
	Namespace   string `json:",omitempty"`
	Sources     []*sourceIntentionJSON
	JWT         json.RawMessage   `json:",omitempty"`
	Meta        map[string]string `json:",omitempty"`
	CreateIndex uint64
	ModifyIndex uint64
}

// MarshalJSON renders the entry in Consul's shape. Each source carries
// its intention's ID as LegacyID and its Meta as LegacyMeta, where Consul
// keeps what the legacy API wrote, so that `consul intention get ID`
// and the entry name one intention.
func (e *ServiceIntentions) MarshalJSON() ([]byte, error) {
	out := serviceIntentionsJSON{Kind: KindServiceIntentions, Name: e.Name, Sources: []*sourceIntentionJSON{}}
	for _, ixn := range e.Sources {
		created, updated := time.Unix(0, ixn.CreatedAt).UTC(), time.Unix(0, ixn.UpdatedAt).UTC()
		out.Sources = append(out.Sources, &sourceIntentionJSON{
			Name: ixn.SourceName, Action: ixn.Action, Precedence: ixn.Precedence(), Type: "consul",
			Description: ixn.Description, LegacyID: ixn.ID, LegacyMeta: ixn.Meta,
			LegacyCreateTime: &created, LegacyUpdateTime: &updated,
		})
		if out.CreateIndex == 0 || ixn.CreateIndex < out.CreateIndex {
			out.CreateIndex = ixn.CreateIndex
		}
	}
	out.ModifyIndex = entryIndex(e.Sources)
	return json.Marshal(&out)
}

// DecodeServiceIntentions decodes and validates a service-intentions
// config entry (the body of PUT /v1/config) into the destination's new
// set of intentions, without IDs or times: the caller assigns them.
// Decoding is strict; every problem is reported, each naming its field.
func DecodeServiceIntentions(body []byte) (string, []Intention, error) {
	var w serviceIntentionsJSON
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return "", nil, fmt.Errorf("%w: %w", ErrInvalid, DecodeError(err))
	}
	if dec.More() {
		return "", nil, fmt.Errorf("%w: Request decode failed: trailing data after the JSON object", ErrInvalid)
	}
	var errs problems
	bad := errs.bad
	dst, err := ParseIntentionName("Name", w.Name)
	if err != nil {
		errs = append(errs, withoutInvalid(err))
	}
	defaultOnly("Partition", w.Partition, bad)
	defaultOnly("Namespace", w.Namespace, bad)
	if !emptyRaw(w.JWT) {
		bad("JWT", "not supported: vmesh does not check JWTs")
	}
	if len(w.Meta) > 0 {
		bad("Meta", "not supported on service-intentions: put metadata on a source (LegacyMeta)")
	}
	seen := map[string]bool{}
	out := make([]Intention, 0, len(w.Sources))
	for i, src := range w.Sources {
		f := func(name string) string { return fmt.Sprintf("Sources[%d].%s", i, name) }
		if src == nil {
			bad(f("Name"), "missing")
			continue
		}
		name, err := ParseIntentionName(f("Name"), src.Name)
		if err != nil {
			errs = append(errs, withoutInvalid(err))
		} else if seen[strings.ToLower(name)] {
			bad(f("Name"), "%q is listed twice", name)
		}
		seen[strings.ToLower(name)] = true
		if src.Peer != "" {
			bad(f("Peer"), "not supported: vmesh has no cluster peering")
		}
		if src.SamenessGroup != "" {
			bad(f("SamenessGroup"), "not supported: vmesh has no sameness groups")
		}
		defaultOnly(f("Partition"), src.Partition, bad)
		defaultOnly(f("Namespace"), src.Namespace, bad)
		if src.Type != "" && src.Type != "consul" {
			bad(f("Type"), "%q is not supported; only consul is", src.Type)
		}
		if !emptyRaw(src.Permissions) {
			bad(f("Permissions"), "not supported yet: intentions allow or deny whole services (set Action)")
		}
		validateIntentionAction(f("Action"), src.Action, bad)
		validateIntentionMeta(f("LegacyMeta"), src.LegacyMeta, bad)
		out = append(out, Intention{
			SourceName: name, DestinationName: dst, Action: src.Action,
			Description: src.Description, Meta: maps.Clone(src.LegacyMeta),
		})
	}
	if err := errs.err(); err != nil {
		return "", nil, err
	}
	return dst, out, nil
}

// DecodeLegacyIntention decodes and validates the body of Consul's
// legacy POST /v1/connect/intentions (id "") or PUT
// /v1/connect/intentions/:id: the pair comes from the body's SourceName
// and DestinationName. The body's ID must be empty or id. The result has
// no ID or times: the caller assigns them.
func DecodeLegacyIntention(body []byte, id string) (*Intention, error) {
	w, err := decodeIntentionBody(body)
	if err != nil {
		return nil, err
	}
	var errs problems
	bad := errs.bad
	switch {
	case id == "" && w.ID != "":
		bad("ID", "must be empty: the agent assigns it")
	case id != "" && w.ID != "" && w.ID != id:
		bad("ID", "%q does not match the ID in the path, %q", w.ID, id)
	}
	src, err := ParseIntentionName("SourceName", w.SourceName)
	if err != nil {
		errs = append(errs, withoutInvalid(err))
	}
	dst, err := ParseIntentionName("DestinationName", w.DestinationName)
	if err != nil {
		errs = append(errs, withoutInvalid(err))
	}
	w.validate(bad)
	if err := errs.err(); err != nil {
		return nil, err
	}
	return &Intention{
		SourceName: src, DestinationName: dst,
		Action: w.Action, Description: w.Description, Meta: w.Meta,
	}, nil
}

// withoutInvalid drops ParseIntentionName's ErrInvalid prefix from an
// error about to be joined under another.
func withoutInvalid(err error) error {
	if u, ok := err.(interface{ Unwrap() []error }); ok {
		if es := u.Unwrap(); len(es) == 2 && es[0] == ErrInvalid {
			return es[1]
		}
	}
	return err
}
