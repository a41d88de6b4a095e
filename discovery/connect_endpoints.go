package discovery

import (
	"strings"

	"github.com/hashicorp/go-memdb"
)

// A service's Connect endpoints (Consul's /v1/catalog/connect/:service and
// /v1/health/connect/:service) are where a mesh client reaches it:
//
//   - its instances on agents' nodes, which their node's proxy fronts;
//   - its Connect-native instances on external nodes (ConnectNative);
//   - the connect-proxy records whose Proxy.DestinationServiceName is the
//     service, as a catalog registration wrote them (inert for vmesh's own
//     data plane, listed as Consul lists them).
//
// A typical instance on an external node is not one: nothing fronts it
// with mTLS. Inert records of other kinds never are.

// ConnectServiceNodes is ServiceNodes for the service's Connect endpoints.
func (s *Store) ConnectServiceNodes(ws memdb.WatchSet, service string, tags []string) (uint64, []ServiceEntry, error) {
	tx := s.readTxn(ws)
	entries, err := connectNodesTxn(ws, tx, service, tags)
	return maxIndex(tx, tableNodes, tableInstances), entries, err
}

// ConnectCheckServiceNodes is CheckServiceNodes for the service's Connect
// endpoints.
func (s *Store) ConnectCheckServiceNodes(ws memdb.WatchSet, service string, tags []string, passingOnly bool) (uint64, []ServiceEntry, error) {
	return s.checkServiceNodes(ws, connectNodesTxn, service, tags, passingOnly)
}

func connectNodesTxn(ws memdb.WatchSet, tx *memdb.Txn, service string, tags []string) ([]ServiceEntry, error) {
	own, err := serviceNodesTxn(ws, tx, service, tags)
	if err != nil {
		return nil, err
	}
	var out []ServiceEntry
	for _, e := range own {
		if e.Instance.Inert() || (e.Node != nil && e.Node.External && !e.Instance.ConnectNative) {
			continue
		}
		out = append(out, e)
	}
	all, err := collect[Instance](ws, tx, tableInstances, "id")
	if err != nil {
		return nil, err
	}
	for _, in := range all {
		if in.Kind != KindConnectProxy || in.Proxy == nil || !strings.EqualFold(in.Proxy.DestinationServiceName, service) || !hasTags(in, tags) {
			continue
		}
		ch, raw, err := tx.FirstWatch(tableNodes, "id", in.Node)
		if err != nil {
			return nil, err
		}
		if ws != nil {
			ws.Add(ch)
		}
		n, _ := raw.(*Node)
		out = append(out, ServiceEntry{Node: n, Instance: in})
	}
	return out, nil
}
