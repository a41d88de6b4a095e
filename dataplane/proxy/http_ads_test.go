package proxy_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerfilter "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/vmesh/vmesh/dataplane/proxy"
	"github.com/vmesh/vmesh/lab/testkit"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// httpListener is a plaintext listener whose HTTP connection manager
// takes route configuration rds over ADS.
func httpListener(t testing.TB, name, rds string, mutate func(*hcm.HttpConnectionManager)) *listener.Listener {
	h := &hcm.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{RouteConfigName: rds, ConfigSource: &core.ConfigSource{
			ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}}}},
		HttpFilters: []*hcm.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerfilter.Router{})}}},
	}
	if mutate != nil {
		mutate(h)
	}
	return &listener.Listener{Name: name, Address: sockAddr("127.0.0.1:0"), FilterChains: []*listener.FilterChain{{
		Filters: []*listener.Filter{{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listener.Filter_TypedConfig{
			TypedConfig: mustAny(t, h)}}},
	}}}
}

func prefixRoute(prefix, cluster string) *route.Route {
	return &route.Route{
		Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: prefix}},
		Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: cluster}}},
	}
}

func (cp *controlPlane) setAll(t testing.TB, version string, listeners, clusters, routes []types.Resource) {
	t.Helper()
	snap, err := cache.NewSnapshot(version, map[resource.Type][]types.Resource{
		resource.ListenerType: listeners, resource.ClusterType: clusters, resource.RouteType: routes,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), "node-x", snap); err != nil {
		t.Fatal(err)
	}
}

// TestHTTPRoutesADS: an HTTP listener whose routes come over RDS: it is
// bound only once its RouteConfiguration arrived; virtual hosts by
// authority, exact path, query parameter and header matches pick the
// cluster, and a request no route matches gets 404. A RouteConfiguration
// or an HTTP connection manager with a field the proxy does not honour is
// NACKed with the resource and the field named, while the previous
// version keeps serving; a new route applies to an open keep-alive
// connection; and a listener that goes away drains its HTTP connections
// with "Connection: close".
func TestHTTPRoutesADS(t *testing.T) {
	a, b := startHTTPApp(t, "a", false), startHTTPApp(t, "b", false)
	cp := startControlPlane(t)
	clusters := []types.Resource{staticCluster("ca", net.JoinHostPort("127.0.0.1", strconv.Itoa(a.port))), staticCluster("cb", net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)))}
	rc := &route.RouteConfiguration{Name: "r1", VirtualHosts: []*route.VirtualHost{
		{Name: "b-host", Domains: []string{"b.example", "*.b.example"}, Routes: []*route.Route{prefixRoute("/", "cb")}},
		{Name: "main", Domains: []string{"*"}, Routes: []*route.Route{
			{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Path{Path: "/exact"}}, Action: prefixRoute("/", "cb").Action},
			{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/q"}, QueryParameters: []*route.QueryParameterMatcher{{
				Name: "to", QueryParameterMatchSpecifier: &route.QueryParameterMatcher_StringMatch{StringMatch: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: "b"}}}}}},
				Action: prefixRoute("/", "cb").Action},
			{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/h"}, Headers: []*route.HeaderMatcher{{
				Name: "x-to", HeaderMatchSpecifier: &route.HeaderMatcher_PresentMatch{PresentMatch: true}}}},
				Action: prefixRoute("/", "cb").Action},
			prefixRoute("/a", "ca"),
		}},
	}}
	// Version 1: the listener without its routes: not bound yet.
	cp.setAll(t, "1", []types.Resource{httpListener(t, "web", "r1", nil)}, clusters, nil)
	p := startProxy(t, proxy.Config{XDSAddr: cp.addr, Node: "node-x", DrainTimeout: 5 * time.Second, MinBackoff: 50 * time.Millisecond, Logger: testkit.Discard()})
	testkit.WaitFor(t, 5*time.Second, "version 1 ACKed", func() bool { return p.Status()[resource.ListenerType].Acked == "1" })
	if _, ok := p.ListenerAddrs()["web"]; ok {
		t.Fatal("the listener was bound before its route configuration arrived")
	}
	cp.setAll(t, "2", []types.Resource{httpListener(t, "web", "r1", nil)}, clusters, []types.Resource{rc})
	testkit.WaitFor(t, 5*time.Second, "the listener bound", func() bool { _, ok := p.ListenerAddrs()["web"]; return ok })
	base := "http://" + p.ListenerAddrs()["web"].String()

	c := &http.Client{Timeout: 5 * time.Second}
	cases := []struct {
		host, path string
		header     string
		app        string
		code       int
	}{
		{"", "/a/x", "", "a", 200},
		{"", "/exact", "", "b", 200},
		{"", "/exact/more", "", "", 404},
		{"", "/q?to=b", "", "b", 200},
		{"", "/q?to=a", "", "", 404},
		{"", "/h", "yes", "b", 200},
		{"", "/h", "", "", 404},
		{"b.example", "/a", "", "b", 200},
		{"B.Example:8080", "/a", "", "b", 200},
		{"x.b.example", "/a", "", "b", 200},
		{"", "/nothing", "", "", 404},
	}
	for _, tc := range cases {
		req := newReq(t, "GET", base+tc.path, nil)
		if tc.host != "" {
			req.Host = tc.host
		}
		if tc.header != "" {
			req.Header.Set("X-To", tc.header)
		}
		resp, s, _ := do(t, c, req)
		if resp.StatusCode != tc.code || s.App != tc.app {
			t.Errorf("GET %s (host %q, x-to %q) = %d from %q; want %d from %q", tc.path, tc.host, tc.header, resp.StatusCode, s.App, tc.code, tc.app)
		}
	}

	// An h2c upgrade offer (curl --http2) is dropped, the request served.
	req := newReq(t, "GET", base+"/a", nil)
	req.Header.Set("Connection", "Upgrade, HTTP2-Settings")
	req.Header.Set("Upgrade", "h2c")
	req.Header.Set("HTTP2-Settings", "AAMAAABkAAQCAAAAAAIAAAAA")
	if resp, s, _ := do(t, c, req); resp.StatusCode != 200 || s.App != "a" || s.Header.Get("Upgrade") != "" || s.Header.Get("Http2-Settings") != "" {
		t.Errorf("an h2c upgrade offer: %d from %q, the app saw %v", resp.StatusCode, s.App, s.Header)
	}

	// A keep-alive connection sees the next route configuration.
	keep := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	if resp, s, _ := do(t, keep, newReq(t, "GET", base+"/a", nil)); resp.StatusCode != 200 || s.App != "a" {
		t.Fatalf("GET /a = %d from %q", resp.StatusCode, s.App)
	}
	rc2 := &route.RouteConfiguration{Name: "r1", VirtualHosts: []*route.VirtualHost{{Name: "main", Domains: []string{"*"}, Routes: []*route.Route{prefixRoute("/", "cb")}}}}
	cp.setAll(t, "3", []types.Resource{httpListener(t, "web", "r1", nil)}, clusters, []types.Resource{rc2})
	testkit.WaitFor(t, 5*time.Second, "version 3 ACKed", func() bool { return p.Status()[resource.RouteType].Acked == "3" })
	if resp, s, _ := do(t, keep, newReq(t, "GET", base+"/a", nil)); resp.StatusCode != 200 || s.App != "b" {
		t.Fatalf("after the route changed, GET /a on the open connection = %d from %q; want b", resp.StatusCode, s.App)
	}

	// Version 4: a route action the proxy does not implement. NACKed
	// (naming the route configuration and the field); version 3 serves.
	bad := &route.RouteConfiguration{Name: "r1", VirtualHosts: []*route.VirtualHost{{Name: "main", Domains: []string{"*"}, Routes: []*route.Route{{
		Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
		Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: "ca"},
			HostRewriteSpecifier: &route.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "elsewhere"}}},
	}}}}}
	cp.setAll(t, "4", []types.Resource{httpListener(t, "web", "r1", nil)}, clusters, []types.Resource{bad})
	testkit.WaitFor(t, 5*time.Second, "version 4 NACKed", func() bool { return p.Status()[resource.RouteType].Nacks > 0 })
	want := "route_configuration r1.virtual_hosts[0].routes[0].route.host_rewrite_literal is not supported"
	if st := p.Status()[resource.RouteType]; !strings.Contains(st.LastNack, want) || st.Acked != "3" {
		t.Errorf("routes: %+v; want version 3 kept and a NACK naming %q", st, want)
	}
	if resp, s, _ := do(t, keep, newReq(t, "GET", base+"/a", nil)); resp.StatusCode != 200 || s.App != "b" {
		t.Errorf("after the NACK, GET /a = %d from %q; want b (version 3)", resp.StatusCode, s.App)
	}

	// Version 5: an HTTP connection manager setting the proxy does not
	// implement, in the listener: NACKed too.
	badL := httpListener(t, "web", "r1", func(h *hcm.HttpConnectionManager) { h.ServerName = "mine" })
	cp.setAll(t, "5", []types.Resource{badL}, clusters, []types.Resource{rc2})
	testkit.WaitFor(t, 5*time.Second, "version 5 NACKed", func() bool { return p.Status()[resource.ListenerType].Nacks > 0 })
	want = "listener web.filter_chains[0].filters[0] http_connection_manager.server_name is not supported"
	if st := p.Status()[resource.ListenerType]; !strings.Contains(st.LastNack, want) || st.Acked != "4" {
		t.Errorf("listeners: %+v; want version 4 kept and a NACK naming %q", st, want)
	}
	if resp, _, _ := do(t, keep, newReq(t, "GET", base+"/a", nil)); resp.StatusCode != 200 {
		t.Errorf("after the listener NACK, GET /a = %d", resp.StatusCode)
	}

	// Version 6 drops the listener: it stops accepting; a response in
	// flight on an open connection completes, then HTTP/1.1 closes the
	// connection and HTTP/2 sends GOAWAY.
	conn, err := net.Dial("tcp", p.ListenerAddrs()["web"].String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	io.WriteString(conn, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "one\n" {
		t.Fatalf("streamed %q, %v", line, err)
	}
	cc, err := h2cTransport().NewClientConn(context.Background(), "http", p.ListenerAddrs()["web"].String())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	h2resp, err := cc.RoundTrip(newReq(t, "GET", "http://x/stream", nil))
	if err != nil {
		t.Fatal(err)
	}
	h2body := bufio.NewReader(h2resp.Body)
	if line, err := h2body.ReadString('\n'); err != nil || line != "one\n" {
		t.Fatalf("streamed over HTTP/2 %q, %v", line, err)
	}
	if n := cc.Available(); n == 0 {
		t.Fatal("the HTTP/2 connection takes no new stream before the drain")
	}
	cp.setAll(t, "6", nil, clusters, nil)
	testkit.WaitFor(t, 5*time.Second, "version 6 ACKed", func() bool { return p.Status()[resource.ListenerType].Acked == "6" })
	testkit.WaitFor(t, 5*time.Second, "GOAWAY on the HTTP/2 connection", func() bool { return cc.Available() == 0 })
	b.release <- struct{}{}
	b.release <- struct{}{}
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "two\n" {
		t.Errorf("the response in flight on a drained listener: %q, %v", rest, err)
	}
	if rest, err := io.ReadAll(h2body); err != nil || string(rest) != "two\n" {
		t.Errorf("the HTTP/2 stream in flight on a drained listener: %q, %v", rest, err)
	}
	// The connection closes: the next request gets no answer.
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	io.WriteString(conn, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(br, nil); err == nil {
		t.Errorf("a drained connection answered another request: %d", resp.StatusCode)
	}
}

// multiCluster is a static cluster over several backends, with lb.
func multiCluster(name string, lb cluster.Cluster_LbPolicy, backends ...string) *cluster.Cluster {
	var eps []*endpoint.LbEndpoint
	for _, b := range backends {
		eps = append(eps, &endpoint.LbEndpoint{HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{Address: sockAddr(b)}}})
	}
	return &cluster.Cluster{
		Name: name, ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC}, LbPolicy: lb,
		ConnectTimeout: durationpb.New(time.Second),
		LoadAssignment: &endpoint.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpoint.LocalityLbEndpoints{{LbEndpoints: eps}}},
	}
}

// TestHTTPPerTryTimeoutAndHashADS: a per-try timeout moves a request off
// a slow endpoint to another one well within the route timeout; a header
// hash policy on a ring hash cluster keeps a key on one endpoint.
func TestHTTPPerTryTimeoutAndHashADS(t *testing.T) {
	slow, fast := startHTTPApp(t, "slow", false), startHTTPApp(t, "fast", false)
	slow.delay = 2 * time.Second
	var ring []string
	apps := map[string]*httpApp{}
	for _, n := range []string{"r1", "r2", "r3"} {
		apps[n] = startHTTPApp(t, n, false)
		ring = append(ring, net.JoinHostPort("127.0.0.1", strconv.Itoa(apps[n].port)))
	}
	addr := func(a *httpApp) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(a.port)) }
	cp := startControlPlane(t)
	rc := &route.RouteConfiguration{Name: "r", VirtualHosts: []*route.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*route.Route{
		{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/ring"}},
			Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: "ring"},
				HashPolicy: []*route.RouteAction_HashPolicy{{PolicySpecifier: &route.RouteAction_HashPolicy_Header_{Header: &route.RouteAction_HashPolicy_Header{HeaderName: "x-user"}}}}}}},
		{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
			Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: "pair"},
				Timeout:     durationpb.New(5 * time.Second),
				RetryPolicy: &route.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(1), PerTryTimeout: durationpb.New(150 * time.Millisecond)}}}},
	}}}}
	cp.setAll(t, "1", []types.Resource{httpListener(t, "web", "r", nil)},
		[]types.Resource{multiCluster("pair", cluster.Cluster_ROUND_ROBIN, addr(slow), addr(fast)), multiCluster("ring", cluster.Cluster_RING_HASH, ring...)},
		[]types.Resource{rc})
	p := startProxy(t, proxy.Config{XDSAddr: cp.addr, Node: "node-x", DrainTimeout: time.Second, MinBackoff: 50 * time.Millisecond, Logger: testkit.Discard()})
	testkit.WaitFor(t, 5*time.Second, "the listener bound", func() bool { _, ok := p.ListenerAddrs()["web"]; return ok })
	base := "http://" + p.ListenerAddrs()["web"].String()
	c := &http.Client{Timeout: 5 * time.Second}

	slowHits := slow.hits.Load()
	for i := range 4 {
		start := time.Now()
		resp, s, _ := do(t, c, newReq(t, "GET", base+"/", nil))
		if resp.StatusCode != 200 || s.App != "fast" || time.Since(start) > time.Second {
			t.Fatalf("GET %d = %d from %q after %s; want fast's answer well before the slow one's 2 s", i, resp.StatusCode, s.App, time.Since(start))
		}
	}
	if slow.hits.Load() == slowHits {
		t.Error("the slow endpoint got no request: the per-try timeout was not exercised")
	}

	seenFor := map[string]string{}
	spread := map[string]bool{}
	for i := range 30 {
		user := "user-" + strconv.Itoa(i%10)
		req := newReq(t, "GET", base+"/ring", nil)
		req.Header.Set("X-User", user)
		resp, s, _ := do(t, c, req)
		if resp.StatusCode != 200 {
			t.Fatalf("GET /ring = %d", resp.StatusCode)
		}
		if prev, ok := seenFor[user]; ok && prev != s.App {
			t.Fatalf("%s went to %s, then to %s", user, prev, s.App)
		}
		seenFor[user] = s.App
		spread[s.App] = true
	}
	if len(spread) < 2 {
		t.Errorf("10 keys all hashed to %v", spread)
	}
}

// TestHTTPStreamIdleADS: the connection manager's stream_idle_timeout
// ends a request the app does not answer with 408 "stream timeout" (no
// route timeout here), and a route's idle_timeout replaces it.
func TestHTTPStreamIdleADS(t *testing.T) {
	slow := startHTTPApp(t, "slow", false)
	slow.delay = 1500 * time.Millisecond
	cp := startControlPlane(t)
	noTimeout := func(prefix string, idle time.Duration) *route.Route {
		a := &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: "slow"}, Timeout: durationpb.New(0)}
		if idle > 0 {
			a.IdleTimeout = durationpb.New(idle)
		}
		return &route.Route{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: prefix}}, Action: &route.Route_Route{Route: a}}
	}
	rc := &route.RouteConfiguration{Name: "r", VirtualHosts: []*route.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*route.Route{
		noTimeout("/patient", 5*time.Second), noTimeout("/", 0),
	}}}}
	l := httpListener(t, "web", "r", func(h *hcm.HttpConnectionManager) { h.StreamIdleTimeout = durationpb.New(200 * time.Millisecond) })
	cp.setAll(t, "1", []types.Resource{l}, []types.Resource{staticCluster("slow", net.JoinHostPort("127.0.0.1", strconv.Itoa(slow.port)))}, []types.Resource{rc})
	p := startProxy(t, proxy.Config{XDSAddr: cp.addr, Node: "node-x", DrainTimeout: time.Second, MinBackoff: 50 * time.Millisecond, Logger: testkit.Discard()})
	testkit.WaitFor(t, 5*time.Second, "the listener bound", func() bool { _, ok := p.ListenerAddrs()["web"]; return ok })
	base := "http://" + p.ListenerAddrs()["web"].String()
	c := &http.Client{Timeout: 5 * time.Second}

	start := time.Now()
	resp, _, body := do(t, c, newReq(t, "GET", base+"/", nil))
	if took := time.Since(start); resp.StatusCode != http.StatusRequestTimeout || body != "stream timeout" || took < 200*time.Millisecond || took >= slow.delay {
		t.Errorf("a stream idle for 200 ms = %d %q after %s; want 408 \"stream timeout\" after 200 ms, before the app's answer", resp.StatusCode, body, took)
	}
	if resp, s, _ := do(t, c, newReq(t, "GET", base+"/patient", nil)); resp.StatusCode != 200 || s.App != "slow" {
		t.Errorf("a route with a 5 s idle timeout = %d from %q; want the app's answer after 1.5 s", resp.StatusCode, s.App)
	}
}
