package discovery

import (
	"strings"

	"github.com/hashicorp/go-memdb"
)

// Usage is the catalog's size as Consul's /v1/operator/usage counts it.
type Usage struct {
	Nodes int
	// Services counts distinct service names (case-insensitively, as the
	// catalog matches them), ServiceInstances every instance.
	Services         int
	ServiceInstances int
	// ConnectServiceInstances counts the instances of each Connect kind:
	// the inert catalog records by Kind, and connect-native for
	// Connect-native instances. Every kind is present, 0 when none.
	ConnectServiceInstances map[string]int
	// BillableServiceInstances are Consul's: typical instances (native
	// ones included), less the servers' own "consul" service.
	BillableServiceInstances int
}

// KindConnectNative is the key of Connect-native instances in
// Usage.ConnectServiceInstances.
const KindConnectNative = "connect-native"

// Usage counts the catalog's nodes, services and instances.
func (s *Store) Usage(ws memdb.WatchSet) (uint64, Usage, error) {
	tx := s.readTxn(ws)
	idx := maxIndex(tx, tableNodes, tableInstances)
	u := Usage{ConnectServiceInstances: map[string]int{KindConnectNative: 0}}
	for _, k := range CatalogKinds {
		u.ConnectServiceInstances[k] = 0
	}
	nodes, err := collect[Node](ws, tx, tableNodes, "id")
	if err != nil {
		return idx, u, err
	}
	insts, err := collect[Instance](ws, tx, tableInstances, "id")
	if err != nil {
		return idx, u, err
	}
	u.Nodes, u.ServiceInstances = len(nodes), len(insts)
	names := map[string]bool{}
	for _, in := range insts {
		names[strings.ToLower(in.Service)] = true
		switch {
		case in.Kind != "":
			u.ConnectServiceInstances[in.Kind]++
			continue
		case in.ConnectNative:
			u.ConnectServiceInstances[KindConnectNative]++
		}
		if !in.IsServerService() {
			u.BillableServiceInstances++
		}
	}
	u.Services = len(names)
	return idx, u, nil
}
