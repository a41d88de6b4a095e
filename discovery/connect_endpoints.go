package discovery

import (
	"strings"

	"github.com/hashicorp/go-memdb"
)

// A service's Connect endpoints (Consul's /v1/catalog/connect/:service and
// /v1/health/connect/:service) are where a mesh client reaches it, node by
// node:
//
//   - on a node that holds connect-proxy records whose
//     Proxy.DestinationServiceName is the service, those records: the
//     sidecar record an agent wrote for a Connect.SidecarService
//     registration (sidecar.go: the node proxy at the mesh port), a
//     connect-proxy an agent or a catalog registration wrote (an Envoy
//     run beside vmesh, inert for vmesh's own data plane). The node's
//     instances of the service itself are then not listed besides them:
//     as in Consul, a client is given the proxy, not the instance behind
//     it;
//   - on any other agent's node, the service's instances there, which
//     that node's proxy fronts;
//   - on any other external node, its Connect-native instances
//     (ConnectNative): nothing fronts a typical one with mTLS.
//
// Inert records of other kinds never are. Which nodes hold a proxy is
// decided before the tag filter, which then applies to what is listed:
// an instance is not listed in place of a proxy whose tags do not match.

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
	all, err := collect[Instance](ws, tx, tableInstances, "id")
	if err != nil {
		return nil, err
	}
	var proxies []ServiceEntry
	proxied := map[string]bool{} // nodes with a proxy for service
	for _, in := range all {
		if in.Kind != KindConnectProxy || in.Proxy == nil || !strings.EqualFold(in.Proxy.DestinationServiceName, service) {
			continue
		}
		proxied[in.Node] = true
		if !hasTags(in, tags) {
			continue
		}
		n, err := nodeTxn(ws, tx, in.Node)
		if err != nil {
			return nil, err
		}
		proxies = append(proxies, ServiceEntry{Node: n, Instance: in})
	}
	own, err := serviceNodesTxn(ws, tx, service, tags)
	if err != nil {
		return nil, err
	}
	var out []ServiceEntry
	for _, e := range own {
		if proxied[e.Instance.Node] || e.Instance.Inert() || (e.Node != nil && e.Node.External && !e.Instance.ConnectNative) {
			continue
		}
		out = append(out, e)
	}
	return append(out, proxies...), nil
}

// nodeTxn reads a node, watching it.
func nodeTxn(ws memdb.WatchSet, tx *memdb.Txn, name string) (*Node, error) {
	ch, raw, err := tx.FirstWatch(tableNodes, "id", name)
	if err != nil {
		return nil, err
	}
	if ws != nil {
		ws.Add(ch)
	}
	n, _ := raw.(*Node)
	return n, nil
}
