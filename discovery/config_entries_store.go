package discovery

import (
	"fmt"

	"github.com/hashicorp/go-memdb"
)

const tableConfigEntries = "config_entries"

func configEntryTables(tables map[string]*memdb.TableSchema) {
	tables[tableConfigEntries] = &memdb.TableSchema{Name: tableConfigEntries, Indexes: map[string]*memdb.IndexSchema{
		// Names are case-insensitive, as service names are in the catalog.
		"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
			&memdb.StringFieldIndex{Field: "Kind"}, &memdb.StringFieldIndex{Field: "Name", Lowercase: true},
		}}},
		"kind": {Name: "kind", Indexer: &memdb.StringFieldIndex{Field: "Kind"}},
	}}
}

// ConfigEntryOp is a config entry write.
type ConfigEntryOp string

// Config entry operations. The CAS forms compare Entry.ModifyIndex with
// the stored entry's (0: it must not exist) and return ErrCASConflict on a
// mismatch, changing nothing.
const (
	ConfigEntryUpsert    ConfigEntryOp = "upsert"
	ConfigEntryUpsertCAS ConfigEntryOp = "upsert-cas"
	ConfigEntryDelete    ConfigEntryOp = "delete"
	ConfigEntryDeleteCAS ConfigEntryOp = "delete-cas"
)

// ConfigEntryRequest writes a config entry.
type ConfigEntryRequest struct {
	Op    ConfigEntryOp
	Entry ConfigEntry
}

func (ConfigEntryRequest) MessageType() MessageType { return ConfigEntryType }

// ConfigEntryApply performs op on e.
func (s *Store) ConfigEntryApply(idx uint64, op ConfigEntryOp, e *ConfigEntry) error {
	db, _ := s.current()
	tx := db.Txn(true)
	defer tx.Abort()
	raw, err := tx.First(tableConfigEntries, "id", e.Kind, e.Name)
	if err != nil {
		return err
	}
	old, _ := raw.(*ConfigEntry)
	if op == ConfigEntryUpsertCAS || op == ConfigEntryDeleteCAS {
		cur := uint64(0)
		if old != nil {
			cur = old.ModifyIndex
		}
		if cur != e.ModifyIndex || (op == ConfigEntryDeleteCAS && old == nil) {
			return ErrCASConflict
		}
	}
	switch op {
	case ConfigEntryUpsert, ConfigEntryUpsertCAS:
		if err := gatewayClash(tx, e.Kind, e.Name); err != nil {
			return err
		}
		c := *e
		c.CreateIndex, c.ModifyIndex = idx, idx
		if old != nil {
			c.CreateIndex = old.CreateIndex
			// The first spelling of the name stays, as a KV key would.
			c.Name = old.Name
		}
		if err := tx.Insert(tableConfigEntries, &c); err != nil {
			return err
		}
	case ConfigEntryDelete, ConfigEntryDeleteCAS:
		if old == nil {
			return nil
		}
		if err := tx.Delete(tableConfigEntries, old); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w: unknown config entry operation %q", ErrInvalid, op)
	}
	if err := bumpIndex(tx, idx, tableConfigEntries); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

// ConfigEntry returns one entry, or nil.
func (s *Store) ConfigEntry(ws memdb.WatchSet, kind, name string) (uint64, *ConfigEntry, error) {
	tx := s.readTxn(ws)
	ch, raw, err := tx.FirstWatch(tableConfigEntries, "id", kind, name)
	if ws != nil {
		ws.Add(ch)
	}
	idx := maxIndex(tx, tableConfigEntries)
	if err != nil || raw == nil {
		return idx, nil, err
	}
	return idx, raw.(*ConfigEntry), nil
}

// ConfigEntries lists the entries of a kind ("" for every kind), by kind
// and name.
func (s *Store) ConfigEntries(ws memdb.WatchSet, kind string) (uint64, []*ConfigEntry, error) {
	tx := s.readTxn(ws)
	var entries []*ConfigEntry
	var err error
	if kind == "" {
		entries, err = collect[ConfigEntry](ws, tx, tableConfigEntries, "id")
	} else {
		entries, err = collect[ConfigEntry](ws, tx, tableConfigEntries, "kind", kind)
	}
	return maxIndex(tx, tableConfigEntries), entries, err
}
