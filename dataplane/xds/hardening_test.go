package xds

import (
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/vmesh/vmesh/discovery"
)

// hardenedSnapshots builds node-a's proxy snapshot and a proxyless gRPC
// client's for a catalog with explicit upstreams, per-user listeners, an
// HTTP and a gRPC service and a trust domain.
func hardenedSnapshots(t *testing.T) (mesh, app *cache.Snapshot) {
	t.Helper()
	st := usersCatalog().
		add(discovery.Instance{Node: "node-b", ID: "rpc-1", Service: "rpc", Port: 9100, Meta: grpcMeta()}, "").
		add(discovery.Instance{Node: "node-a", ID: "local-web", Service: "Shop", Port: 8081, Meta: httpMeta(),
			Upstreams: []discovery.Upstream{{DestinationName: "orders", LocalBindAddress: "127.0.0.1", LocalBindPort: 15200}}}, "").
		trustDomain("td.test").at(31)
	v := NewView(st, Options{VIPs: map[string]VIP{"orders": {IP: "240.0.0.31"}, "target": {IP: "240.0.0.30"}}})
	build := func(node *core.Node) *cache.Snapshot {
		snap, err := Build(v, v.NodeInfo(node))
		if err != nil {
			t.Fatal(err)
		}
		if err := Check(snap); err != nil {
			t.Fatal(err)
		}
		return snap
	}
	mesh, app = build(meshNode), build(appNode)
	return mesh, app
}

// TestMeshClustersExpectDestinationIdentity: every mesh cluster (a
// service's own, and the per-user and per-service copies that present
// another certificate) tells the proxy which identity the endpoint must
// present: the destination service's SPIFFE ID, case-insensitively.
func TestMeshClustersExpectDestinationIdentity(t *testing.T) {
	mesh, _ := hardenedSnapshots(t)
	n := 0
	for name := range mesh.GetResources(resource.ClusterType) {
		cl := clusterOf(t, mesh, name)
		for _, m := range cl.GetTransportSocketMatches() {
			var tc tlsv3.UpstreamTlsContext
			if err := m.GetTransportSocket().GetTypedConfig().UnmarshalTo(&tc); err != nil {
				t.Fatal(err)
			}
			svc := cl.GetEdsClusterConfig().GetServiceName()
			if svc == "" {
				svc = cl.GetName()
			}
			cv := tc.GetCommonTlsContext().GetCombinedValidationContext()
			if cv.GetValidationContextSdsSecretConfig().GetName() != SecretRoots {
				t.Errorf("cluster %s: roots %v, want %s over SDS", name, cv.GetValidationContextSdsSecretConfig(), SecretRoots)
			}
			sans := cv.GetDefaultValidationContext().GetMatchTypedSubjectAltNames()
			want := "spiffe://td.test/svc/" + svc
			if len(sans) != 1 || sans[0].GetSanType() != tlsv3.SubjectAltNameMatcher_URI ||
				sans[0].GetMatcher().GetExact() != want || !sans[0].GetMatcher().GetIgnoreCase() {
				t.Errorf("cluster %s expects %v, want the URI SAN %s (any case)", name, sans, want)
			}
			if tc.GetSni() != SNI(svc) {
				t.Errorf("cluster %s: SNI %q, want %q", name, tc.GetSni(), SNI(svc))
			}
			n++
		}
	}
	if n < 5 {
		t.Errorf("only %d mesh clusters checked; the fixture should make more", n)
	}
}

// TestHCMNormalizesPaths: every HTTP connection manager of a host's proxy
// (outbound, per-user, explicit upstream, inbound) normalizes paths,
// merges slashes and refuses escaped slashes; a proxyless gRPC client's
// api_listener does not carry them.
func TestHCMNormalizesPaths(t *testing.T) {
	mesh, app := hardenedSnapshots(t)
	n := 0
	for name, r := range mesh.GetResources(resource.ListenerType) {
		l := r.(*listener.Listener)
		for _, fc := range append(l.GetFilterChains(), l.GetDefaultFilterChain()) {
			for _, f := range fc.GetFilters() {
				if f.GetName() != "envoy.filters.network.http_connection_manager" {
					continue
				}
				var h hcm.HttpConnectionManager
				if err := f.GetTypedConfig().UnmarshalTo(&h); err != nil {
					t.Fatal(err)
				}
				if !h.GetNormalizePath().GetValue() || !h.GetMergeSlashes() || h.GetPathWithEscapedSlashesAction() != hcm.HttpConnectionManager_REJECT_REQUEST {
					t.Errorf("listener %s chain %q: normalize_path %v, merge_slashes %v, escaped slashes %v",
						name, fc.GetName(), h.GetNormalizePath(), h.GetMergeSlashes(), h.GetPathWithEscapedSlashesAction())
				}
				n++
			}
		}
	}
	if n < 5 {
		t.Errorf("only %d HTTP connection managers checked; the fixture should make more", n)
	}
	for name, r := range app.GetResources(resource.ListenerType) {
		var h hcm.HttpConnectionManager
		if err := r.(*listener.Listener).GetApiListener().GetApiListener().UnmarshalTo(&h); err != nil {
			t.Fatal(err)
		}
		if h.GetNormalizePath() != nil || h.GetMergeSlashes() {
			t.Errorf("api_listener %s carries path normalization", name)
		}
	}
}
