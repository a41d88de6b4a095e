package xds

import (
	"sort"
	"strings"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/vmesh/vmesh/discovery"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// routeConfig is the RouteConfiguration of an HTTP, HTTP/2 or gRPC service,
// named after it: the service-router's routes in order, then a catch-all to
// the service itself; every destination goes through its splitter and
// resolver. One configuration serves the outbound listener, explicit
// upstream listeners and proxyless gRPC's api_listener alike.
func (b *builder) routeConfig(s *service) *route.RouteConfiguration {
	var routes []*route.Route
	if s.router != nil {
		for i := range s.router.Routes {
			r := &s.router.Routes[i]
			routes = append(routes, &route.Route{
				Match:                   b.routeMatch(r.Match),
				Action:                  &route.Route_Route{Route: b.routeAction(s, r.Destination)},
				RequestHeadersToAdd:     adds(r.Destination, true),
				RequestHeadersToRemove:  removals(r.Destination, true),
				ResponseHeadersToAdd:    adds(r.Destination, false),
				ResponseHeadersToRemove: removals(r.Destination, false),
			})
		}
	}
	routes = append(routes, &route.Route{
		Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
		Action: &route.Route_Route{Route: b.routeAction(s, nil)},
	})
	return &route.RouteConfiguration{
		Name: s.key,
		VirtualHosts: []*route.VirtualHost{{
			Name: s.key,
			// The client chose the service by address (VIP, upstream port)
			// or, for gRPC, by the listener's name: any authority is fine.
			Domains: []string{"*"},
			Routes:  routes,
		}},
	}
}

// modifiers returns a destination's request or response header changes.
func modifiers(d *discovery.ServiceRouteDestination, request bool) *discovery.HTTPHeaderModifiers {
	switch {
	case d == nil:
		return nil
	case request:
		return d.RequestHeaders
	}
	return d.ResponseHeaders
}

func adds(d *discovery.ServiceRouteDestination, request bool) []*core.HeaderValueOption {
	return headersToAdd(modifiers(d, request))
}

func removals(d *discovery.ServiceRouteDestination, request bool) []string {
	if h := modifiers(d, request); h != nil {
		return h.Remove
	}
	return nil
}

// headersToAdd renders Add (appended) and Set (replacing), in key order.
func headersToAdd(h *discovery.HTTPHeaderModifiers) []*core.HeaderValueOption {
	if h == nil {
		return nil
	}
	var out []*core.HeaderValueOption
	for _, m := range []struct {
		kv     map[string]string
		action core.HeaderValueOption_HeaderAppendAction
	}{
		{h.Add, core.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD},
		{h.Set, core.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD},
	} {
		keys := make([]string, 0, len(m.kv))
		for k := range m.kv {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			out = append(out, &core.HeaderValueOption{
				Header:       &core.HeaderValue{Key: k, Value: m.kv[k]},
				AppendAction: m.action,
			})
		}
	}
	return out
}

func stringMatch(exact, prefix, suffix, contains, regex string, ignoreCase bool) *matcher.StringMatcher {
	m := &matcher.StringMatcher{IgnoreCase: ignoreCase}
	switch {
	case exact != "":
		m.MatchPattern = &matcher.StringMatcher_Exact{Exact: exact}
	case prefix != "":
		m.MatchPattern = &matcher.StringMatcher_Prefix{Prefix: prefix}
	case suffix != "":
		m.MatchPattern = &matcher.StringMatcher_Suffix{Suffix: suffix}
	case contains != "":
		m.MatchPattern = &matcher.StringMatcher_Contains{Contains: contains}
	default:
		m.IgnoreCase = false
		m.MatchPattern = &matcher.StringMatcher_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: regex}}
	}
	return m
}

func (b *builder) routeMatch(m *discovery.ServiceRouteMatch) *route.RouteMatch {
	rm := &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}}
	if m == nil || m.HTTP == nil {
		return rm
	}
	h := m.HTTP
	switch {
	case h.PathExact != "":
		rm.PathSpecifier = &route.RouteMatch_Path{Path: h.PathExact}
	case h.PathPrefix != "":
		rm.PathSpecifier = &route.RouteMatch_Prefix{Prefix: h.PathPrefix}
	case h.PathRegex != "":
		rm.PathSpecifier = &route.RouteMatch_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: h.PathRegex}}
	}
	if h.CaseInsensitive {
		rm.CaseSensitive = wrapperspb.Bool(false)
	}
	for _, hdr := range h.Header {
		hm := &route.HeaderMatcher{Name: hdr.Name, InvertMatch: hdr.Invert}
		if hdr.Present {
			hm.HeaderMatchSpecifier = &route.HeaderMatcher_PresentMatch{PresentMatch: true}
		} else {
			hm.HeaderMatchSpecifier = &route.HeaderMatcher_StringMatch{
				StringMatch: stringMatch(hdr.Exact, hdr.Prefix, hdr.Suffix, hdr.Contains, hdr.Regex, hdr.IgnoreCase),
			}
		}
		rm.Headers = append(rm.Headers, hm)
	}
	for _, q := range h.QueryParam {
		qm := &route.QueryParameterMatcher{Name: q.Name}
		if q.Present {
			qm.QueryParameterMatchSpecifier = &route.QueryParameterMatcher_PresentMatch{PresentMatch: true}
		} else {
			qm.QueryParameterMatchSpecifier = &route.QueryParameterMatcher_StringMatch{
				StringMatch: stringMatch(q.Exact, "", "", "", q.Regex, false),
			}
		}
		rm.QueryParameters = append(rm.QueryParameters, qm)
	}
	if len(h.Methods) > 0 {
		// One matcher for the set: exact for one method, an RE2
		// alternation (anchored by Envoy's full match) for several.
		sm := &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: h.Methods[0]}}
		if len(h.Methods) > 1 {
			sm.MatchPattern = &matcher.StringMatcher_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: strings.Join(h.Methods, "|")}}
		}
		rm.Headers = append(rm.Headers, &route.HeaderMatcher{
			Name: ":method", HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: sm},
		})
	}
	return rm
}

// routeAction sends to d's service (nil or empty: s itself) through its
// splitter and resolver, with d's retries, timeouts and rewrite.
func (b *builder) routeAction(s *service, d *discovery.ServiceRouteDestination) *route.RouteAction {
	dest := s.key
	if d != nil && d.Service != "" {
		dest = serviceKey(d.Service)
	}
	ws := b.v.splits(dest)
	a := &route.RouteAction{}
	if len(ws) == 1 {
		a.ClusterSpecifier = &route.RouteAction_Cluster{Cluster: b.clusterRef(ws[0].cluster)}
		if t := b.v.services[ws[0].cluster]; t != nil && t.resolver != nil && t.resolver.LoadBalancer != nil {
			a.HashPolicy = hashPolicies(t.resolver.LoadBalancer.HashPolicies)
		}
	} else {
		wc := &route.WeightedCluster{}
		for _, w := range ws {
			cw := &route.WeightedCluster_ClusterWeight{Name: b.clusterRef(w.cluster), Weight: wrapperspb.UInt32(w.weight)}
			if sp := w.split; sp != nil {
				cw.RequestHeadersToAdd = headersToAdd(sp.RequestHeaders)
				cw.ResponseHeadersToAdd = headersToAdd(sp.ResponseHeaders)
				if sp.RequestHeaders != nil {
					cw.RequestHeadersToRemove = sp.RequestHeaders.Remove
				}
				if sp.ResponseHeaders != nil {
					cw.ResponseHeadersToRemove = sp.ResponseHeaders.Remove
				}
			}
			wc.Clusters = append(wc.Clusters, cw)
		}
		a.ClusterSpecifier = &route.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	// A route's timeout, else the destination resolver's; gRPC streams
	// may live long, so a gRPC service without one gets none instead of
	// Envoy's 15 s default.
	var timeout time.Duration
	if d != nil && d.RequestTimeout > 0 {
		timeout = time.Duration(d.RequestTimeout)
	} else if t := b.v.services[b.v.target(dest)]; t != nil && t.resolver != nil && t.resolver.RequestTimeout > 0 {
		timeout = time.Duration(t.resolver.RequestTimeout)
	}
	switch {
	case timeout > 0:
		a.Timeout = durationpb.New(timeout)
	case s.protocol == discovery.ProtocolGRPC:
		a.Timeout = durationpb.New(0)
	}
	if d == nil {
		return a
	}
	if d.IdleTimeout > 0 {
		a.IdleTimeout = durationpb.New(time.Duration(d.IdleTimeout))
	}
	if d.PrefixRewrite != "" {
		a.PrefixRewrite = d.PrefixRewrite
	}
	a.RetryPolicy = retryPolicy(d, s.protocol)
	return a
}

// retryPolicy follows Consul: RetryOn, then connect-failure and
// retriable-status-codes as asked. Unlike Consul, NumRetries alone retries
// on 5xx (and, for gRPC, UNAVAILABLE) instead of never.
func retryPolicy(d *discovery.ServiceRouteDestination, protocol string) *route.RetryPolicy {
	if d.NumRetries == 0 && !d.RetryOnConnectFailure && len(d.RetryOnStatusCodes) == 0 && len(d.RetryOn) == 0 {
		return nil
	}
	on := append([]string(nil), d.RetryOn...)
	if d.RetryOnConnectFailure && !contains(on, "connect-failure") {
		on = append(on, "connect-failure")
	}
	rp := &route.RetryPolicy{}
	if len(d.RetryOnStatusCodes) > 0 {
		on = append(on, "retriable-status-codes")
		rp.RetriableStatusCodes = d.RetryOnStatusCodes
	}
	if len(on) == 0 {
		on = []string{"5xx"}
		if protocol == discovery.ProtocolGRPC {
			on = append(on, "unavailable")
		}
	}
	rp.RetryOn = strings.Join(on, ",")
	if d.NumRetries > 0 {
		rp.NumRetries = wrapperspb.UInt32(d.NumRetries)
	}
	return rp
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func hashPolicies(hps []discovery.HashPolicy) []*route.RouteAction_HashPolicy {
	var out []*route.RouteAction_HashPolicy
	for _, hp := range hps {
		p := &route.RouteAction_HashPolicy{Terminal: hp.Terminal}
		switch {
		case hp.SourceIP:
			p.PolicySpecifier = &route.RouteAction_HashPolicy_ConnectionProperties_{
				ConnectionProperties: &route.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true},
			}
		case hp.Field == "header":
			p.PolicySpecifier = &route.RouteAction_HashPolicy_Header_{Header: &route.RouteAction_HashPolicy_Header{HeaderName: hp.FieldValue}}
		case hp.Field == "query_parameter":
			p.PolicySpecifier = &route.RouteAction_HashPolicy_QueryParameter_{
				QueryParameter: &route.RouteAction_HashPolicy_QueryParameter{Name: hp.FieldValue},
			}
		case hp.Field == "cookie":
			c := &route.RouteAction_HashPolicy_Cookie{Name: hp.FieldValue}
			if cc := hp.CookieConfig; cc != nil {
				c.Path = cc.Path
				switch {
				case cc.Session:
					// A zero TTL makes Envoy set a session cookie.
					c.Ttl = durationpb.New(0)
				case cc.TTL > 0:
					c.Ttl = durationpb.New(time.Duration(cc.TTL))
				}
			}
			p.PolicySpecifier = &route.RouteAction_HashPolicy_Cookie_{Cookie: c}
		default:
			continue
		}
		out = append(out, p)
	}
	return out
}
