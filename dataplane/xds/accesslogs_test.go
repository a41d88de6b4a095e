package xds

import (
	"testing"

	accesslog "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	fileal "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	streamal "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/vmesh/vmesh/discovery"
)

// filterLogs are the access loggers of every HTTP connection manager and
// TCP proxy of a snapshot's listeners, by listener and chain.
func filterLogs(t *testing.T, s *cache.Snapshot) map[string][]*accesslog.AccessLog {
	t.Helper()
	out := map[string][]*accesslog.AccessLog{}
	for name, r := range s.GetResources(resource.ListenerType) {
		l := r.(*listener.Listener)
		chains := append([]*listener.FilterChain(nil), l.GetFilterChains()...)
		if l.GetDefaultFilterChain() != nil {
			chains = append(chains, l.GetDefaultFilterChain())
		}
		for _, fc := range chains {
			for _, f := range fc.GetFilters() {
				key := name + "/" + fc.GetName() + "/" + f.GetName()
				switch f.GetTypedConfig().GetTypeUrl() {
				case "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager":
					var h hcm.HttpConnectionManager
					if err := f.GetTypedConfig().UnmarshalTo(&h); err != nil {
						t.Fatal(err)
					}
					out[key] = h.GetAccessLog()
				case "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy":
					var p tcp.TcpProxy
					if err := f.GetTypedConfig().UnmarshalTo(&p); err != nil {
						t.Fatal(err)
					}
					out[key] = p.GetAccessLog()
				}
			}
		}
	}
	return out
}

func accessLogFixtures() []fixture {
	base := func() *catalog {
		return threeNodes().
			add(discovery.Instance{Node: "node-a", ID: "web-1", Service: "web", Port: 8080, Meta: httpMeta()}, "").
			add(discovery.Instance{Node: "node-a", ID: "db-1", Service: "db", Port: 5432}, "").
			add(discovery.Instance{Node: "node-b", ID: "orders-1", Service: "orders", Port: 9000, Meta: grpcMeta()}, "")
	}
	return []fixture{
		{
			name: "access-logs-file-default-json",
			state: base().
				entry(`{"Kind":"proxy-defaults","Name":"global","AccessLogs":{"Enabled":true,"Type":"file","Path":"/var/log/vmesh/access.log"}}`).
				at(40),
			opts: Options{VIPs: map[string]VIP{"web": {IP: "240.0.0.10"}, "db": {IP: "240.0.0.11"}}},
			check: func(t *testing.T, mesh, app *cache.Snapshot) {
				logs := filterLogs(t, mesh)
				if len(logs) == 0 {
					t.Fatal("no filters")
				}
				for key, ls := range logs {
					if len(ls) != 1 || ls[0].GetName() != "envoy.access_loggers.file" {
						t.Fatalf("%s: access logs %v, want one file logger", key, ls)
					}
					var f fileal.FileAccessLog
					if err := ls[0].GetTypedConfig().UnmarshalTo(&f); err != nil {
						t.Fatal(err)
					}
					js := f.GetLogFormat().GetJsonFormat().GetFields()
					if f.GetPath() != "/var/log/vmesh/access.log" || js["response_flags"].GetStringValue() != "%RESPONSE_FLAGS%" || js["trace_id"].GetStringValue() != "%TRACE_ID%" {
						t.Errorf("%s: %v", key, &f)
					}
				}
				for name, r := range mesh.GetResources(resource.ListenerType) {
					if ls := r.(*listener.Listener).GetAccessLog(); len(ls) != 1 || ls[0].GetName() != listenerAccessLog {
						t.Errorf("listener %s: listener access logs %v", name, ls)
					}
				}
				// A proxyless client gets no logger: nothing would write it.
				for name, r := range app.GetResources(resource.ListenerType) {
					if len(r.(*listener.Listener).GetAccessLog()) != 0 {
						t.Errorf("API listener %s got an access log", name)
					}
				}
			},
		},
		{
			name: "access-logs-stderr-text-no-listener-logs",
			state: base().
				entry(`{"Kind":"proxy-defaults","Name":"global","AccessLogs":{"Enabled":true,"Type":"stderr","DisableListenerLogs":true,"TextFormat":"%RESPONSE_CODE% %RESPONSE_FLAGS%"}}`).
				at(41),
			opts: Options{VIPs: map[string]VIP{"web": {IP: "240.0.0.10"}}},
			check: func(t *testing.T, mesh, app *cache.Snapshot) {
				for key, ls := range filterLogs(t, mesh) {
					if len(ls) != 1 || ls[0].GetName() != "envoy.access_loggers.stderr" {
						t.Fatalf("%s: access logs %v, want one stderr logger", key, ls)
					}
					var f streamal.StderrAccessLog
					if err := ls[0].GetTypedConfig().UnmarshalTo(&f); err != nil {
						t.Fatal(err)
					}
					if got := f.GetLogFormat().GetTextFormatSource().GetInlineString(); got != "%RESPONSE_CODE% %RESPONSE_FLAGS%\n" {
						t.Errorf("%s: text format %q", key, got)
					}
				}
				for name, r := range mesh.GetResources(resource.ListenerType) {
					if ls := r.(*listener.Listener).GetAccessLog(); len(ls) != 0 {
						t.Errorf("listener %s: listener logs %v despite DisableListenerLogs", name, ls)
					}
				}
			},
		},
		{
			name: "access-logs-disabled",
			state: base().
				entry(`{"Kind":"proxy-defaults","Name":"global","AccessLogs":{"Enabled":false,"Type":"stdout"}}`).
				at(42),
			opts: Options{VIPs: map[string]VIP{"web": {IP: "240.0.0.10"}}},
			check: func(t *testing.T, mesh, app *cache.Snapshot) {
				for key, ls := range filterLogs(t, mesh) {
					if len(ls) != 0 {
						t.Errorf("%s: access logs %v while disabled", key, ls)
					}
				}
				// proxy-defaults is no service: no cluster named "global".
				if _, ok := mesh.GetResources(resource.ClusterType)["global"]; ok {
					t.Error("proxy-defaults made a cluster")
				}
			},
		},
	}
}
