package discovery

import (
	"fmt"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/acl"
)

// Autopilot's configuration lives in the catalog, so that every server
// that becomes leader runs autopilot with the one an operator set
// (/v1/operator/autopilot/configuration); the leader's autopilot reads it
// on every pass. With none stored, the servers use DefaultAutopilotConfig.

const (
	tableAutopilot = "autopilot"
	autopilotID    = "config"
	// RecordAutopilot is the stored configuration in a snapshot.
	RecordAutopilot RecordType = 14
	// AutopilotSetType sets it (with an optional CAS).
	AutopilotSetType MessageType = 22
)

// AutopilotConfig is Consul's AutopilotConfiguration (the fields vmesh's
// autopilot uses; Consul Enterprise's redundancy zones and upgrade
// migration are not part of it).
type AutopilotConfig struct {
	ID                      string // always autopilotID
	CleanupDeadServers      bool
	LastContactThreshold    time.Duration
	MaxTrailingLogs         uint64
	MinQuorum               uint
	ServerStabilizationTime time.Duration
	CreateIndex             uint64
	ModifyIndex             uint64
}

// DefaultAutopilotConfig is what the servers run with until an operator
// sets one.
func DefaultAutopilotConfig() AutopilotConfig {
	return AutopilotConfig{
		ID:                      autopilotID,
		CleanupDeadServers:      true,
		LastContactThreshold:    2 * time.Second,
		MaxTrailingLogs:         1000,
		MinQuorum:               1,
		ServerStabilizationTime: 3 * time.Second,
	}
}

// Validate refuses a configuration autopilot cannot run with, naming the
// field.
func (c *AutopilotConfig) Validate() error {
	switch {
	case c.LastContactThreshold <= 0:
		return fmt.Errorf("%w: LastContactThreshold must be positive", ErrInvalid)
	case c.ServerStabilizationTime < 0:
		return fmt.Errorf("%w: ServerStabilizationTime must not be negative", ErrInvalid)
	case c.MaxTrailingLogs == 0:
		return fmt.Errorf("%w: MaxTrailingLogs must be positive", ErrInvalid)
	}
	return nil
}

// AutopilotSetRequest stores Config; with CAS set, only when the stored
// configuration's ModifyIndex is Index (0: none stored yet).
type AutopilotSetRequest struct {
	Config AutopilotConfig
	CAS    bool
	Index  uint64
}

func (AutopilotSetRequest) MessageType() MessageType { return AutopilotSetType }

func autopilotTables(tables map[string]*memdb.TableSchema) {
	tables[tableAutopilot] = &memdb.TableSchema{Name: tableAutopilot, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
	}}
}

// Autopilot returns the stored configuration, or the default (with
// ModifyIndex 0) when none is stored.
func (s *Store) Autopilot(ws memdb.WatchSet) (uint64, AutopilotConfig, error) {
	tx := s.readTxn(ws)
	idx := maxIndex(tx, tableAutopilot)
	ch, raw, err := tx.FirstWatch(tableAutopilot, "id", autopilotID)
	if err != nil {
		return 0, AutopilotConfig{}, err
	}
	ws.Add(ch)
	if raw == nil {
		return idx, DefaultAutopilotConfig(), nil
	}
	return idx, *raw.(*AutopilotConfig), nil
}

// AutopilotSet applies an AutopilotSetRequest. A CAS that does not match
// is ErrCASConflict.
func (s *Store) AutopilotSet(idx uint64, req *AutopilotSetRequest) error {
	c := req.Config
	if err := c.Validate(); err != nil {
		return err
	}
	db, _ := s.current()
	tx := db.Txn(true)
	defer tx.Abort()
	raw, err := tx.First(tableAutopilot, "id", autopilotID)
	if err != nil {
		return err
	}
	c.ID, c.CreateIndex, c.ModifyIndex = autopilotID, idx, idx
	var cur uint64
	if raw != nil {
		old := raw.(*AutopilotConfig)
		cur, c.CreateIndex = old.ModifyIndex, old.CreateIndex
	}
	if req.CAS && req.Index != cur {
		return fmt.Errorf("%w: autopilot configuration is at index %d, not %d", ErrCASConflict, cur, req.Index)
	}
	if err := tx.Insert(tableAutopilot, &c); err != nil {
		return err
	}
	if err := bumpIndex(tx, idx, tableAutopilot); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

// authorizeAutopilot: operator:write, as Consul's.
func authorizeAutopilot(authz *acl.Authorizer) error { return authz.OperatorWrite() }
