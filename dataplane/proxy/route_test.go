package proxy

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerfilter "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpopts "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func action(cluster string) *route.Route_Route {
	return &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: cluster}}}
}

func exact(s string) *matcher.StringMatcher {
	return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: s}}
}

func mustRoutes(t *testing.T, rc *route.RouteConfiguration) *routeConfigSpec {
	t.Helper()
	s, err := parseRouteConfig(rc, "route_configuration "+rc.GetName())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// routed is the cluster a request is routed to ("" for none).
func routed(rc *routeConfigSpec, r *http.Request) string {
	rt := rc.route(newReqView(r, false))
	if rt == nil {
		return ""
	}
	return rt.action.clusters[0].name
}

// TestVirtualHostDomains: Envoy's order — exact, longest suffix wildcard,
// longest prefix wildcard, "*" — case-insensitive, and a port that no
// domain names is ignored.
func TestVirtualHostDomains(t *testing.T) {
	vh := func(name string, domains ...string) *route.VirtualHost {
		return &route.VirtualHost{Name: name, Domains: domains, Routes: []*route.Route{{
			Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}}, Action: action(name)}}}
	}
	rc := mustRoutes(t, &route.RouteConfiguration{Name: "r", VirtualHosts: []*route.VirtualHost{
		vh("exact", "api.example.com", "api.example.com:8443"),
		vh("suffix", "*.example.com"),
		vh("longsuffix", "*.eu.example.com"),
		vh("prefix", "api.*"),
		vh("star", "*"),
	}})
	for host, want := range map[string]string{
		"api.example.com":      "exact",
		"API.Example.COM":      "exact",
		"api.example.com:80":   "exact",
		"api.example.com:8443": "exact",
		"www.example.com":      "suffix",
		"x.eu.example.com":     "longsuffix",
		"example.com":          "star", // a wildcard stands for one character at least
		"api.other.org":        "prefix",
		"api.other.org:1":      "prefix",
		"other.org":            "star",
		"[::1]:80":             "star",
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Host = host
		if got := routed(rc, r); got != want {
			t.Errorf("host %q -> %q, want %q", host, got, want)
		}
	}
	// Without "*", an unknown host has no route.
	rc = mustRoutes(t, &route.RouteConfiguration{Name: "r", VirtualHosts: []*route.VirtualHost{vh("exact", "a")}})
	r := httptest.NewRequest("GET", "/", nil)
	r.Host = "b"
	if got := routed(rc, r); got != "" {
		t.Errorf("an unknown host was routed to %q", got)
	}
}

// TestRouteMatch: path (prefix, exact, full-match regex; case
// sensitivity), header (string matchers, presence, inversion as Envoy
// does it for a missing header, pseudo-headers) and query parameter
// matches.
func TestRouteMatch(t *testing.T) {
	hdr := func(name string, sm *matcher.StringMatcher, invert bool) *route.HeaderMatcher {
		return &route.HeaderMatcher{Name: name, HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: sm}, InvertMatch: invert}
	}
	present := func(name string, want, invert bool) *route.HeaderMatcher {
		return &route.HeaderMatcher{Name: name, HeaderMatchSpecifier: &route.HeaderMatcher_PresentMatch{PresentMatch: want}, InvertMatch: invert}
	}
	regex := func(re string) *matcher.StringMatcher {
		return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: re}}}
	}
	type rt struct {
		m       *route.RouteMatch
		cluster string
	}
	routes := []rt{
		{&route.RouteMatch{PathSpecifier: &route.RouteMatch_Path{Path: "/Exact"}}, "exact"},
		{&route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/ci/"}, CaseSensitive: wrapperspb.Bool(false)}, "ci"},
		{&route.RouteMatch{PathSpecifier: &route.RouteMatch_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: "/v[0-9]+"}}}, "regex"},
		{&route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/h/"}, Headers: []*route.HeaderMatcher{
			hdr("x-a", &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: "AB"}, IgnoreCase: true}, false),
			hdr(":method", regex("GET|PUT"), false),
		}}, "headers"},
		{&route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/inv/"}, Headers: []*route.HeaderMatcher{
			hdr("x-user", &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: "test-"}}, true),
		}}, "inverted"},
		{&route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/absent/"}, Headers: []*route.HeaderMatcher{present("x-b", false, false)}}, "absent"},
		{&route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/notpresent/"}, Headers: []*route.HeaderMatcher{present("x-b", true, true)}}, "notpresent"},
		{&route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/empty/"}, Headers: []*route.HeaderMatcher{
			{Name: "x-e", HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: exact("")}, TreatMissingHeaderAsEmpty: true},
		}}, "empty"},
		{&route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/auth/"}, Headers: []*route.HeaderMatcher{
			hdr(":authority", &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Suffix{Suffix: ".internal"}}, false),
		}}, "authority"},
		{&route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/q"}, QueryParameters: []*route.QueryParameterMatcher{
			{Name: "debug", QueryParameterMatchSpecifier: &route.QueryParameterMatcher_PresentMatch{PresentMatch: true}},
			{Name: "v", QueryParameterMatchSpecifier: &route.QueryParameterMatcher_StringMatch{StringMatch: regex("[0-9]+")}},
		}}, "query"},
		{&route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}}, "default"},
	}
	var rs []*route.Route
	for _, r := range routes {
		rs = append(rs, &route.Route{Match: r.m, Action: action(r.cluster)})
	}
	rc := mustRoutes(t, &route.RouteConfiguration{Name: "r", VirtualHosts: []*route.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: rs}}})
	cases := []struct {
		method, target, host string
		header               http.Header
		want                 string
	}{
		{"GET", "/Exact", "", nil, "exact"},
		{"GET", "/Exact?x=1", "", nil, "exact"}, // the query does not count for path
		{"GET", "/exact", "", nil, "default"},
		{"GET", "/Exact/more", "", nil, "default"},
		{"GET", "/CI/x", "", nil, "ci"},
		{"GET", "/v12", "", nil, "regex"},
		{"GET", "/v12/x", "", nil, "default"}, // a regex matches the whole path
		{"GET", "/h/", "", http.Header{"X-A": {"abc"}}, "headers"},
		{"PUT", "/h/", "", http.Header{"X-A": {"ABc"}}, "headers"},
		{"POST", "/h/", "", http.Header{"X-A": {"abc"}}, "default"},
		{"GET", "/h/", "", http.Header{"X-A": {"xab"}}, "default"},
		{"GET", "/inv/", "", http.Header{"X-User": {"alice"}}, "inverted"},
		{"GET", "/inv/", "", http.Header{"X-User": {"test-1"}}, "default"},
		{"GET", "/inv/", "", nil, "default"}, // a missing header never matches a string matcher
		{"GET", "/absent/", "", nil, "absent"},
		{"GET", "/absent/", "", http.Header{"X-B": {""}}, "default"},
		{"GET", "/notpresent/", "", nil, "notpresent"},
		{"GET", "/notpresent/", "", http.Header{"X-B": {"1"}}, "default"},
		{"GET", "/empty/", "", nil, "empty"},
		{"GET", "/auth/", "db.internal", nil, "authority"},
		{"GET", "/auth/", "db.public", nil, "default"},
		{"GET", "/q?debug&v=42", "", nil, "query"},
		{"GET", "/q?debug&v=x", "", nil, "default"},
		{"GET", "/q?v=42", "", nil, "default"},
	}
	for _, tc := range cases {
		r := httptest.NewRequest(tc.method, tc.target, nil)
		if tc.host != "" {
			r.Host = tc.host
		}
		for k, v := range tc.header {
			r.Header[k] = v
		}
		if got := routed(rc, r); got != tc.want {
			t.Errorf("%s %s %v -> %q, want %q", tc.method, tc.target, tc.header, got, tc.want)
		}
	}
}

// TestRouteParseErrors: what the proxy does not implement is refused, by
// name, never ignored.
func TestRouteParseErrors(t *testing.T) {
	base := func(mut func(*route.Route)) *route.RouteConfiguration {
		r := &route.Route{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}}, Action: action("c")}
		mut(r)
		return &route.RouteConfiguration{Name: "r", VirtualHosts: []*route.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*route.Route{r}}}}
	}
	cases := []struct {
		name string
		rc   *route.RouteConfiguration
		want string
	}{
		{"direct response", base(func(r *route.Route) {
			r.Action = &route.Route_DirectResponse{DirectResponse: &route.DirectResponseAction{Status: 200}}
		}), "route_configuration r.virtual_hosts[0].routes[0].direct_response is not supported"},
		{"retry_on", base(func(r *route.Route) {
			r.GetRoute().RetryPolicy = &route.RetryPolicy{RetryOn: "5xx,http3-post-connect-failure"}
		}), `routes[0].route.retry_policy.retry_on "http3-post-connect-failure"`},
		{"retry host predicate", base(func(r *route.Route) {
			r.GetRoute().RetryPolicy = &route.RetryPolicy{RetryOn: "5xx", RetryHostPredicate: []*route.RetryPolicy_RetryHostPredicate{{Name: "x"}}}
		}), "route.retry_policy.retry_host_predicate is not supported"},
		{"regex rewrite", base(func(r *route.Route) {
			r.GetRoute().RegexRewrite = &matcher.RegexMatchAndSubstitute{}
		}), "route.regex_rewrite is not supported"},
		{"prefix rewrite on a regex", base(func(r *route.Route) {
			r.Match.PathSpecifier = &route.RouteMatch_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: "/a.*"}}
			r.GetRoute().PrefixRewrite = "/b"
		}), "route.prefix_rewrite with a safe_regex match"},
		{"bad regex", base(func(r *route.Route) {
			r.Match.PathSpecifier = &route.RouteMatch_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: "(("}}
		}), `match.safe_regex.regex "(("`},
		{"header formatter", base(func(r *route.Route) {
			r.RequestHeadersToAdd = []*core.HeaderValueOption{{Header: &core.HeaderValue{Key: "x-ip", Value: "%DOWNSTREAM_REMOTE_ADDRESS%"}}}
		}), "request_headers_to_add[0].header.value"},
		{"host header", base(func(r *route.Route) {
			r.RequestHeadersToAdd = []*core.HeaderValueOption{{Header: &core.HeaderValue{Key: "Host", Value: "x"}}}
		}), `request_headers_to_add[0].header.key: "Host" cannot be set`},
		{"hash filter state", base(func(r *route.Route) {
			r.GetRoute().HashPolicy = []*route.RouteAction_HashPolicy{{PolicySpecifier: &route.RouteAction_HashPolicy_FilterState_{FilterState: &route.RouteAction_HashPolicy_FilterState{Key: "k"}}}}
		}), "route.hash_policy[0].filter_state is not supported"},
		{"weights", base(func(r *route.Route) {
			r.GetRoute().ClusterSpecifier = &route.RouteAction_WeightedClusters{WeightedClusters: &route.WeightedCluster{Clusters: []*route.WeightedCluster_ClusterWeight{{Name: "a", Weight: wrapperspb.UInt32(0)}}}}
		}), "route.weighted_clusters: no cluster has a weight"},
		{"wildcard in the middle", &route.RouteConfiguration{Name: "r", VirtualHosts: []*route.VirtualHost{{Name: "v", Domains: []string{"a.*.b"}}}}, `virtual_hosts[0].domains[0]: "a.*.b"`},
		{"duplicate domain", &route.RouteConfiguration{Name: "r", VirtualHosts: []*route.VirtualHost{{Name: "v", Domains: []string{"*"}}, {Name: "w", Domains: []string{"*"}}}}, `virtual_hosts[1].domains[0]: domain "*" is also in`},
		{"vhost retry policy", &route.RouteConfiguration{Name: "r", VirtualHosts: []*route.VirtualHost{{Name: "v", Domains: []string{"*"}, RetryPolicy: &route.RetryPolicy{}}}}, "virtual_hosts[0].retry_policy is not supported"},
	}
	for _, tc := range cases {
		_, err := parseRouteConfig(tc.rc, "route_configuration r")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want an error containing %q", tc.name, err, tc.want)
		}
		if err != nil && !errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v wraps neither ErrUnsupported nor ErrInvalid", tc.name, err)
		}
	}
}

// TestHCMParse: the connection manager's fields the proxy honours, and
// refusals.
func TestHCMParse(t *testing.T) {
	ok := &hcm.HttpConnectionManager{
		StatPrefix:                   "s",
		RouteSpecifier:               &hcm.HttpConnectionManager_RouteConfig{RouteConfig: &route.RouteConfiguration{Name: "inline"}},
		HttpFilters:                  []*hcm.HttpFilter{routerFilterForTest(t)},
		UpgradeConfigs:               []*hcm.HttpConnectionManager_UpgradeConfig{{UpgradeType: "WebSocket"}},
		ForwardClientCertDetails:     hcm.HttpConnectionManager_SANITIZE_SET,
		SetCurrentClientCertDetails:  &hcm.HttpConnectionManager_SetCurrentClientCertDetails{Uri: true},
		CommonHttpProtocolOptions:    &core.HttpProtocolOptions{IdleTimeout: durationpb.New(time.Minute)},
		StreamIdleTimeout:            durationpb.New(0),
		NormalizePath:                wrapperspb.Bool(true),
		MergeSlashes:                 true,
		PathWithEscapedSlashesAction: hcm.HttpConnectionManager_UNESCAPE_AND_FORWARD,
	}
	s, err := parseHCM(ok, "hcm")
	if err != nil {
		t.Fatal(err)
	}
	if !s.websocket || s.xfcc != xfccSanitizeSet || !s.xfccURI || s.idleTimeout != time.Minute || s.streamIdle != 0 || s.inline == nil {
		t.Errorf("parsed %+v", s)
	}
	if s.paths != (pathNorm{normalize: true, merge: true, slashes: slashesUnescape}) {
		t.Errorf("path settings %+v", s.paths)
	}
	// Envoy's defaults when the fields are not set: nothing is changed.
	bare := proto.Clone(ok).(*hcm.HttpConnectionManager)
	bare.NormalizePath, bare.MergeSlashes, bare.PathWithEscapedSlashesAction = nil, false, hcm.HttpConnectionManager_IMPLEMENTATION_SPECIFIC_DEFAULT
	if s, err := parseHCM(bare, "hcm"); err != nil || s.paths.active() {
		t.Errorf("without the path fields: %+v, %v; want no normalization", s.paths, err)
	}
	for _, tc := range []struct {
		mut  func(*hcm.HttpConnectionManager)
		want string
	}{
		{func(h *hcm.HttpConnectionManager) { h.HttpFilters = nil }, "hcm.http_filters: the last HTTP filter must be the router"},
		{func(h *hcm.HttpConnectionManager) { h.CodecType = hcm.HttpConnectionManager_HTTP1 }, "hcm.codec_type HTTP1"},
		{func(h *hcm.HttpConnectionManager) {
			h.UpgradeConfigs = []*hcm.HttpConnectionManager_UpgradeConfig{{UpgradeType: "CONNECT"}}
		}, `hcm.upgrade_configs[0].upgrade_type "CONNECT"`},
		{func(h *hcm.HttpConnectionManager) {
			h.SetCurrentClientCertDetails = &hcm.HttpConnectionManager_SetCurrentClientCertDetails{Dns: true}
		}, "hcm.set_current_client_cert_details.dns is not supported"},
		{func(h *hcm.HttpConnectionManager) { h.RequestTimeout = durationpb.New(time.Second) }, "hcm.request_timeout is not supported"},
		{func(h *hcm.HttpConnectionManager) {
			h.PathWithEscapedSlashesAction = hcm.HttpConnectionManager_UNESCAPE_AND_REDIRECT
		}, "hcm.path_with_escaped_slashes_action UNESCAPE_AND_REDIRECT"},
		{func(h *hcm.HttpConnectionManager) {
			h.RouteSpecifier = &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{RouteConfigName: "r", ConfigSource: &core.ConfigSource{
				ConfigSourceSpecifier: &core.ConfigSource_PathConfigSource{PathConfigSource: &core.PathConfigSource{Path: "/etc/r"}}}}}
		}, "hcm.rds.config_source: route configurations come over ADS only"},
	} {
		h := proto.Clone(ok).(*hcm.HttpConnectionManager)
		tc.mut(h)
		if _, err := parseHCM(h, "hcm"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v; want an error containing %q", err, tc.want)
		}
	}
}

// TestHTTPProtocolOptions: explicit HTTP/2 or HTTP/1.1 to the endpoints,
// nothing else.
func TestHTTPProtocolOptions(t *testing.T) {
	h2 := &httpopts.HttpProtocolOptions{UpstreamProtocolOptions: &httpopts.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpopts.HttpProtocolOptions_ExplicitHttpConfig{
		ProtocolConfig: &httpopts.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &core.Http2ProtocolOptions{}}}}}
	if got, err := parseHTTPProtocolOptions(h2, "o"); err != nil || !got {
		t.Errorf("explicit http2 = %v, %v", got, err)
	}
	h1 := &httpopts.HttpProtocolOptions{UpstreamProtocolOptions: &httpopts.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpopts.HttpProtocolOptions_ExplicitHttpConfig{
		ProtocolConfig: &httpopts.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &core.Http1ProtocolOptions{}}}}}
	if got, err := parseHTTPProtocolOptions(h1, "o"); err != nil || got {
		t.Errorf("explicit http1 = %v, %v", got, err)
	}
	auto := &httpopts.HttpProtocolOptions{UpstreamProtocolOptions: &httpopts.HttpProtocolOptions_AutoConfig{AutoConfig: &httpopts.HttpProtocolOptions_AutoHttpConfig{}}}
	if _, err := parseHTTPProtocolOptions(auto, "o"); err == nil || !strings.Contains(err.Error(), "o.auto_config is not supported") {
		t.Errorf("auto_config: %v", err)
	}
	h2.GetExplicitHttpConfig().GetHttp2ProtocolOptions().MaxConcurrentStreams = wrapperspb.UInt32(10)
	if _, err := parseHTTPProtocolOptions(h2, "o"); err == nil || !strings.Contains(err.Error(), "http2_protocol_options.max_concurrent_streams is not supported") {
		t.Errorf("http2 max_concurrent_streams: %v", err)
	}
}

// TestHashPolicy: the hash key follows the policies' inputs, a terminal
// policy ends the list, and a cookie policy with a ttl generates the
// cookie as Envoy does.
func TestHashPolicy(t *testing.T) {
	parse := func(hps ...*route.RouteAction_HashPolicy) *routeAction {
		a, err := parseRouteAction(&route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: "c"}, HashPolicy: hps}, "a")
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	header := &route.RouteAction_HashPolicy{PolicySpecifier: &route.RouteAction_HashPolicy_Header_{Header: &route.RouteAction_HashPolicy_Header{HeaderName: "x-user"}}, Terminal: true}
	srcIP := &route.RouteAction_HashPolicy{PolicySpecifier: &route.RouteAction_HashPolicy_ConnectionProperties_{ConnectionProperties: &route.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}}
	a := parse(header, srcIP)
	key := func(user, remote string) (uint64, bool) {
		r := httptest.NewRequest("GET", "/", nil)
		if user != "" {
			r.Header.Set("X-User", user)
		}
		k, ok, _ := a.hashKey(newReqView(r, false), remote)
		return k, ok
	}
	k1, ok1 := key("alice", "10.0.0.1:1")
	k2, _ := key("alice", "10.0.0.2:2")
	k3, _ := key("bob", "10.0.0.1:1")
	if !ok1 || k1 != k2 || k1 == k3 {
		t.Errorf("header (terminal): alice@1 %x, alice@2 %x, bob@1 %x; want alice's equal, bob's different", k1, k2, k3)
	}
	k4, ok4 := key("", "10.0.0.1:1")
	k5, _ := key("", "10.0.0.1:9")
	k6, _ := key("", "10.0.0.3:1")
	if !ok4 || k4 != k5 || k4 == k6 {
		t.Errorf("source IP: %x %x %x; want the port ignored, the IP not", k4, k5, k6)
	}
	cookie := parse(&route.RouteAction_HashPolicy{PolicySpecifier: &route.RouteAction_HashPolicy_Cookie_{Cookie: &route.RouteAction_HashPolicy_Cookie{
		Name: "sticky", Ttl: durationpb.New(time.Hour), Path: "/app"}}})
	r := httptest.NewRequest("GET", "/", nil)
	k, ok, set := cookie.hashKey(newReqView(r, false), "10.0.0.1:1")
	if !ok || !strings.HasPrefix(set, `sticky="`) || !strings.HasSuffix(set, `"; Max-Age=3600; Path=/app; HttpOnly`) {
		t.Fatalf("a generated cookie: %x %v %q", k, ok, set)
	}
	// The client sends it back: same key, no new cookie.
	val := strings.TrimSuffix(strings.TrimPrefix(set, `sticky="`), `"; Max-Age=3600; Path=/app; HttpOnly`)
	r = httptest.NewRequest("GET", "/", nil)
	r.AddCookie(&http.Cookie{Name: "sticky", Value: val})
	k2, ok, set2 := cookie.hashKey(newReqView(r, false), "10.9.9.9:1")
	if !ok || k2 != k || set2 != "" {
		t.Errorf("with the cookie: %x (want %x), %v, set %q", k2, k, ok, set2)
	}
	session := parse(&route.RouteAction_HashPolicy{PolicySpecifier: &route.RouteAction_HashPolicy_Cookie_{Cookie: &route.RouteAction_HashPolicy_Cookie{Name: "s", Ttl: durationpb.New(0)}}})
	if _, _, set := session.hashKey(newReqView(httptest.NewRequest("GET", "/", nil), false), "1.2.3.4:5"); strings.Contains(set, "Max-Age") {
		t.Errorf("a session cookie has a Max-Age: %q", set)
	}
	none := parse(&route.RouteAction_HashPolicy{PolicySpecifier: &route.RouteAction_HashPolicy_Cookie_{Cookie: &route.RouteAction_HashPolicy_Cookie{Name: "s"}}})
	if _, ok, set := none.hashKey(newReqView(httptest.NewRequest("GET", "/", nil), false), "1.2.3.4:5"); ok || set != "" {
		t.Errorf("a cookie policy without ttl and no cookie: %v %q; want no key", ok, set)
	}
}

// TestHeaderMutation: removals first, then additions by append action.
func TestHeaderMutation(t *testing.T) {
	m, err := parseHeaderMutation([]*core.HeaderValueOption{
		{Header: &core.HeaderValue{Key: "x-append", Value: "2"}},
		{Header: &core.HeaderValue{Key: "x-absent", Value: "new"}, AppendAction: core.HeaderValueOption_ADD_IF_ABSENT},
		{Header: &core.HeaderValue{Key: "x-absent2", Value: "new"}, AppendAction: core.HeaderValueOption_ADD_IF_ABSENT},
		{Header: &core.HeaderValue{Key: "x-over", Value: "new"}, AppendAction: core.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD},
		{Header: &core.HeaderValue{Key: "x-only", Value: "new"}, AppendAction: core.HeaderValueOption_OVERWRITE_IF_EXISTS},
		{Header: &core.HeaderValue{Key: "x-only2", Value: "new"}, AppendAction: core.HeaderValueOption_OVERWRITE_IF_EXISTS},
		{Header: &core.HeaderValue{Key: "x-empty", Value: ""}},
		{Header: &core.HeaderValue{Key: "x-pct", Value: "100%%"}},
		{Header: &core.HeaderValue{Key: "x-gone", Value: "back"}},
	}, []string{"x-gone", "x-removed"}, "r", "request")
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{"X-Append": {"1"}, "X-Absent": {"old"}, "X-Over": {"old"}, "X-Only": {"old"}, "X-Legacy": {"old", "older"}, "X-Gone": {"old"}, "X-Removed": {"x"}}
	m.apply(h)
	want := http.Header{"X-Append": {"1", "2"}, "X-Absent": {"old"}, "X-Absent2": {"new"}, "X-Over": {"new"}, "X-Only": {"new"},
		"X-Legacy": {"old", "older"}, "X-Pct": {"100%"}, "X-Gone": {"back"}}
	if len(h) != len(want) {
		t.Errorf("headers = %v, want %v", h, want)
	}
	for k, v := range want {
		if strings.Join(h[k], ",") != strings.Join(v, ",") {
			t.Errorf("%s = %q, want %q", k, h[k], v)
		}
	}
}

// TestRetryable: which results a retry policy retries.
func TestRetryable(t *testing.T) {
	pol := func(on string, codes ...uint32) *routeSpec {
		r, err := parseRetryPolicy(&route.RetryPolicy{RetryOn: on, RetriableStatusCodes: codes}, "p")
		if err != nil {
			t.Fatal(err)
		}
		return &routeSpec{action: &routeAction{retry: r}}
	}
	res := func(code int, h ...string) attempt {
		r := &http.Response{StatusCode: code, Header: http.Header{}}
		for i := 0; i+1 < len(h); i += 2 {
			r.Header.Set(h[i], h[i+1])
		}
		return attempt{res: r}
	}
	grpcH := http.Header{"Content-Type": {"application/grpc"}}
	cases := []struct {
		name   string
		route  *routeSpec
		method string
		grpc   bool
		a      attempt
		want   bool
	}{
		{"GET 503 on 5xx", pol("5xx"), "GET", false, res(503), true},
		{"POST 503 on 5xx", pol("5xx"), "POST", false, res(503), false},
		{"PUT 500 on gateway-error", pol("gateway-error"), "PUT", false, res(500), false},
		{"GET 502 on gateway-error", pol("gateway-error"), "GET", false, res(502), true},
		{"GET 404", pol("5xx"), "GET", false, res(404), false},
		{"GET 409 retriable-4xx", pol("retriable-4xx"), "GET", false, res(409), true},
		{"GET 418 listed", pol("retriable-status-codes", 418), "GET", false, res(418), true},
		{"GET 418 not listed", pol("retriable-status-codes", 429), "GET", false, res(418), false},
		{"GET 503 overloaded", pol("5xx"), "GET", false, res(503, "X-Envoy-Overloaded", "true"), false},
		{"GET 429 rate limited", pol("envoy-ratelimited"), "GET", false, res(429, "X-Envoy-Ratelimited", "true"), true},
		{"POST connect failure", pol("connect-failure"), "POST", false, attempt{kind: failConnect}, true},
		{"POST connect failure on 5xx", pol("5xx"), "POST", false, attempt{kind: failConnect}, true},
		{"GET reset on connect-failure", pol("connect-failure"), "GET", false, attempt{kind: failReset}, false},
		{"GET reset", pol("reset"), "GET", false, attempt{kind: failReset}, true},
		{"POST reset", pol("reset"), "POST", false, attempt{kind: failReset}, false},
		{"POST refused stream", pol("refused-stream"), "POST", false, attempt{kind: failRefused}, true},
		{"GET per-try timeout on 5xx", pol("5xx"), "GET", false, attempt{kind: failPerTryTimeout}, true},
		{"gRPC unavailable", pol("unavailable"), "POST", true, res(200, "Grpc-Status", "14"), true},
		{"gRPC internal not asked", pol("unavailable"), "POST", true, res(200, "Grpc-Status", "13"), false},
		{"gRPC resource-exhausted", pol("resource-exhausted,cancelled"), "POST", true, res(200, "Grpc-Status", "8"), true},
		{"gRPC ok", pol("unavailable,5xx"), "POST", true, res(200, "Grpc-Status", "0"), false},
		{"overflow", pol("5xx,connect-failure,reset"), "GET", false, attempt{kind: failOverflow}, false},
	}
	for _, tc := range cases {
		r := httptest.NewRequest(tc.method, "/", nil)
		if tc.grpc {
			r.Header = grpcH
		}
		s := &stream{route: tc.route, r: r, grpc: tc.grpc}
		if got := s.retryable(tc.a); got != tc.want {
			t.Errorf("%s: retryable = %v, want %v", tc.name, got, tc.want)
		}
	}
	// A body that outgrew the replay buffer is not sent again.
	s := &stream{route: pol("connect-failure"), r: httptest.NewRequest("POST", "/", nil), body: &streamBody{}}
	s.body.overflow.Store(true)
	if s.retryable(attempt{kind: failConnect}) {
		t.Error("a request whose body is no longer kept was retried")
	}
}

// TestBackoff: fully jittered, growing, capped.
func TestBackoff(t *testing.T) {
	rp := &retrySpec{base: 25 * time.Millisecond, maxDelay: 250 * time.Millisecond}
	for n := 1; n < 30; n++ {
		limit := min(time.Duration(1<<min(n, 20)-1)*rp.base, rp.maxDelay)
		for range 50 {
			if d := backoff(rp, n); d < 0 || d >= limit {
				t.Fatalf("backoff(%d) = %s, want in [0, %s)", n, d, limit)
			}
		}
	}
}

func routerFilterForTest(t *testing.T) *hcm.HttpFilter {
	t.Helper()
	a, err := anypb.New(&routerfilter.Router{})
	if err != nil {
		t.Fatal(err)
	}
	return &hcm.HttpFilter{Name: "envoy.filters.http.router", ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: a}}
}
