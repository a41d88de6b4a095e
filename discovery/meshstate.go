package discovery

import (
	"slices"

	"github.com/hashicorp/go-memdb"
)

// MeshState is everything the data plane derives its configuration from,
// read in one transaction so that instances, their checks and the config
// entries that shape routing all come from the same raft index.
type MeshState struct {
	// Index is the highest raft index of the tables read.
	Index         uint64
	Nodes         []*Node
	Instances     []*Instance
	Checks        []*Check
	ConfigEntries []*ConfigEntry
	// VIPs are the services' virtual IPs (vips.go).
	VIPs []*VIP
	// Intentions authorize traffic into services (intentions.go), in
	// SortIntentions order.
	Intentions []*Intention
	// TrustDomain is the cluster CA's SPIFFE trust domain ("" before
	// bootstrap stores the CA): peers' identities are spiffe://<td>/...
	TrustDomain string
}

// MeshState reads the whole data-plane view. ws (if not nil) gets a channel
// per table, so it fires on any change to nodes, instances, checks, config
// entries, VIPs, intentions or the CA, and on a snapshot restore; the objects returned are shared with
// the catalog and must not be modified.
func (s *Store) MeshState(ws memdb.WatchSet) (*MeshState, error) {
	tx := s.readTxn(ws)
	st := &MeshState{Index: maxIndex(tx, tableNodes, tableInstances, tableChecks, tableConfigEntries, tableVIPs, tableIntentions, tableCA)}
	var err error
	if st.Nodes, err = collect[Node](ws, tx, tableNodes, "id"); err != nil {
		return nil, err
	}
	if st.Instances, err = collect[Instance](ws, tx, tableInstances, "id"); err != nil {
		return nil, err
	}
	// The servers' own "consul" registrations and Consul's proxy and
	// gateway records (kinds.go) are not mesh services.
	st.Instances = slices.DeleteFunc(st.Instances, func(in *Instance) bool { return !in.InMesh() })
	if st.Checks, err = collect[Check](ws, tx, tableChecks, "id"); err != nil {
		return nil, err
	}
	if st.ConfigEntries, err = collect[ConfigEntry](ws, tx, tableConfigEntries, "id"); err != nil {
		return nil, err
	}
	// Gateway entries configure gateways, and vmesh runs none (gateways.go).
	st.ConfigEntries = slices.DeleteFunc(st.ConfigEntries, func(e *ConfigEntry) bool { return IsGatewayKind(e.Kind) })
	if st.VIPs, err = collect[VIP](ws, tx, tableVIPs, "id"); err != nil {
		return nil, err
	}
	if st.Intentions, err = collect[Intention](ws, tx, tableIntentions, "id"); err != nil {
		return nil, err
	}
	SortIntentions(st.Intentions)
	ch, ca, err := tx.FirstWatch(tableCA, "id", caRootID)
	if err != nil {
		return nil, err
	}
	if ws != nil {
		ws.Add(ch)
	}
	if ca != nil {
		st.TrustDomain = ca.(*CARoot).TrustDomain
	}
	return st, nil
}
