package proxy

import (
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// Route configurations (RDS, or inline in an HTTP connection manager),
// parsed: virtual hosts by domain, routes in order, each with its match
// and its action. Every field is honoured or refused, so a NACK names the
// route configuration and the field.

// Envoy's defaults for a route.
const (
	defaultRouteTimeout = 15 * time.Second
	defaultRetryBase    = 25 * time.Millisecond
)

type routeConfigSpec struct {
	name string
	// ignorePort: ignore_port_in_host_matching; without it a host with a
	// port that no domain names is matched again without its port.
	ignorePort bool
	exact      map[string]*vhostSpec
	// suffixes ("*.example.com") and prefixes ("example.*") hold the
	// wildcard domains, longest first: the longest match wins.
	suffixes, prefixes []wildDomain
	star               *vhostSpec
}

type wildDomain struct {
	part  string // the domain without its "*"
	vhost *vhostSpec
}

type vhostSpec struct {
	name   string
	routes []*routeSpec
}

type routeSpec struct {
	match       routeMatch
	action      *routeAction
	reqHeaders  headerMutation
	respHeaders headerMutation
}

type pathKind int

const (
	pathPrefix pathKind = iota
	pathExact
	pathRegex
)

type routeMatch struct {
	kind          pathKind
	value         string // prefix or path (lower-case when not case sensitive)
	re            *regexp.Regexp
	caseSensitive bool
	headers       []headerMatch
	query         []queryMatch
}

type headerMatch struct {
	name string // lower case; ":method", ":path", ":authority", ":scheme" are the pseudo-headers
	// present is set for present_match (the value it wants); str for
	// string_match.
	present        *bool
	str            func(string) bool
	invert         bool
	missingAsEmpty bool
}

type queryMatch struct {
	name string
	str  func(string) bool // nil: present_match
}

type routeAction struct {
	clusters []routeCluster
	total    uint64
	// timeout bounds the request from the end of its body to the end of
	// the response, retries included (0: none).
	timeout time.Duration
	// idle overrides the connection manager's stream idle timeout when
	// hasIdle (0: none).
	idle    time.Duration
	hasIdle bool
	// prefixRewrite replaces the matched prefix (or path) when set.
	prefixRewrite string
	retry         *retrySpec
	hash          []hashSpec
}

type routeCluster struct {
	name        string
	weight      uint32
	reqHeaders  headerMutation
	respHeaders headerMutation
}

// headerMutation is one level's header changes: removals, then additions.
type headerMutation struct {
	remove []string
	add    []headerAdd
}

type headerAdd struct {
	key, value string
	action     core.HeaderValueOption_HeaderAppendAction
}

// retryOn is a set of retry_on conditions.
type retryOn uint32

const (
	retry5xx retryOn = 1 << iota
	retryGatewayError
	retryReset
	retryConnectFailure
	retryRetriable4xx
	retryRefusedStream
	retryStatusCodes
	retryRateLimited
	retryGRPCCancelled
	retryGRPCDeadlineExceeded
	retryGRPCResourceExhausted
	retryGRPCUnavailable
	retryGRPCInternal
)

var retryOnNames = map[string]retryOn{
	"5xx":                    retry5xx,
	"gateway-error":          retryGatewayError,
	"reset":                  retryReset,
	"connect-failure":        retryConnectFailure,
	"retriable-4xx":          retryRetriable4xx,
	"refused-stream":         retryRefusedStream,
	"retriable-status-codes": retryStatusCodes,
	"envoy-ratelimited":      retryRateLimited,
	"cancelled":              retryGRPCCancelled,
	"deadline-exceeded":      retryGRPCDeadlineExceeded,
	"resource-exhausted":     retryGRPCResourceExhausted,
	"unavailable":            retryGRPCUnavailable,
	"internal":               retryGRPCInternal,
}

type retrySpec struct {
	on       retryOn
	num      int
	perTry   time.Duration // 0: none
	codes    []uint32
	base     time.Duration
	maxDelay time.Duration
}

type hashKind int

const (
	hashHeader hashKind = iota
	hashCookie
	hashQuery
	hashSourceIP
)

type hashSpec struct {
	kind hashKind
	name string // header (lower case), cookie or query parameter
	// A cookie with a ttl is generated when the request has none; a zero
	// ttl makes it a session cookie.
	hasTTL   bool
	ttl      time.Duration
	path     string
	terminal bool
}

func parseRouteConfig(rc *route.RouteConfiguration, path string) (*routeConfigSpec, error) {
	if err := onlyFields(rc, path, "name", "virtual_hosts", "ignore_port_in_host_matching"); err != nil {
		return nil, err
	}
	s := &routeConfigSpec{name: rc.GetName(), ignorePort: rc.GetIgnorePortInHostMatching(), exact: map[string]*vhostSpec{}}
	seen := map[string]string{}
	for i, vh := range rc.GetVirtualHosts() {
		vp := fmt.Sprintf("%s.virtual_hosts[%d]", path, i)
		v, err := parseVirtualHost(vh, vp)
		if err != nil {
			return nil, err
		}
		if len(vh.GetDomains()) == 0 {
			return nil, fmt.Errorf("%w: %s.domains is empty", ErrInvalid, vp)
		}
		for j, d := range vh.GetDomains() {
			dp := fmt.Sprintf("%s.domains[%d]", vp, j)
			d = strings.ToLower(d)
			if prev, dup := seen[d]; dup {
				return nil, fmt.Errorf("%w: %s: domain %q is also in %s", ErrInvalid, dp, d, prev)
			}
			seen[d] = vp
			switch {
			case d == "*":
				s.star = v
			case strings.Count(d, "*") > 1 || (strings.Contains(d, "*") && !strings.HasPrefix(d, "*") && !strings.HasSuffix(d, "*")):
				return nil, fmt.Errorf("%w: %s: %q: a wildcard goes at the start or the end of a domain only", ErrInvalid, dp, d)
			case strings.HasPrefix(d, "*"):
				s.suffixes = append(s.suffixes, wildDomain{part: d[1:], vhost: v})
			case strings.HasSuffix(d, "*"):
				s.prefixes = append(s.prefixes, wildDomain{part: d[:len(d)-1], vhost: v})
			case d == "":
				return nil, fmt.Errorf("%w: %s is empty", ErrInvalid, dp)
			default:
				s.exact[d] = v
			}
		}
	}
	longestFirst := func(w []wildDomain) {
		sort.SliceStable(w, func(i, j int) bool { return len(w[i].part) > len(w[j].part) })
	}
	longestFirst(s.suffixes)
	longestFirst(s.prefixes)
	return s, nil
}

func parseVirtualHost(vh *route.VirtualHost, path string) (*vhostSpec, error) {
	if err := onlyFields(vh, path, "name", "domains", "routes"); err != nil {
		return nil, err
	}
	v := &vhostSpec{name: vh.GetName()}
	for i, r := range vh.GetRoutes() {
		rs, err := parseRoute(r, fmt.Sprintf("%s.routes[%d]", path, i))
		if err != nil {
			return nil, err
		}
		v.routes = append(v.routes, rs)
	}
	return v, nil
}

func parseRoute(r *route.Route, path string) (*routeSpec, error) {
	if err := onlyFields(r, path, "name", "match", "route", "request_headers_to_add", "request_headers_to_remove",
		"response_headers_to_add", "response_headers_to_remove"); err != nil {
		return nil, err
	}
	if r.GetMatch() == nil {
		return nil, fmt.Errorf("%w: %s.match is missing", ErrInvalid, path)
	}
	if r.GetRoute() == nil {
		return nil, fmt.Errorf("%w: %s has no route action", ErrInvalid, path)
	}
	s := &routeSpec{}
	var err error
	if s.match, err = parseRouteMatch(r.GetMatch(), path+".match"); err != nil {
		return nil, err
	}
	if s.action, err = parseRouteAction(r.GetRoute(), path+".route"); err != nil {
		return nil, err
	}
	if s.action.prefixRewrite != "" && s.match.kind == pathRegex {
		return nil, fmt.Errorf("%w: %s.route.prefix_rewrite with a safe_regex match (only with prefix or path)", ErrInvalid, path)
	}
	if s.reqHeaders, err = parseHeaderMutation(r.GetRequestHeadersToAdd(), r.GetRequestHeadersToRemove(), path, "request"); err != nil {
		return nil, err
	}
	if s.respHeaders, err = parseHeaderMutation(r.GetResponseHeadersToAdd(), r.GetResponseHeadersToRemove(), path, "response"); err != nil {
		return nil, err
	}
	return s, nil
}

func parseRouteMatch(m *route.RouteMatch, path string) (routeMatch, error) {
	var rm routeMatch
	if err := onlyFields(m, path, "prefix", "path", "safe_regex", "case_sensitive", "headers", "query_parameters"); err != nil {
		return rm, err
	}
	rm.caseSensitive = m.GetCaseSensitive() == nil || m.GetCaseSensitive().GetValue()
	norm := func(s string) string {
		if rm.caseSensitive {
			return s
		}
		return strings.ToLower(s)
	}
	switch p := m.GetPathSpecifier().(type) {
	case *route.RouteMatch_Prefix:
		rm.kind, rm.value = pathPrefix, norm(p.Prefix)
	case *route.RouteMatch_Path:
		rm.kind, rm.value = pathExact, norm(p.Path)
	case *route.RouteMatch_SafeRegex:
		re, err := parseRegex(p.SafeRegex, path+".safe_regex")
		if err != nil {
			return rm, err
		}
		if !rm.caseSensitive {
			// Envoy ignores case_sensitive for a regex; so does the proxy.
			rm.caseSensitive = true
		}
		rm.kind, rm.re = pathRegex, re
	default:
		return rm, fmt.Errorf("%w: %s has no path specifier (prefix, path or safe_regex)", ErrInvalid, path)
	}
	for i, h := range m.GetHeaders() {
		hp := fmt.Sprintf("%s.headers[%d]", path, i)
		if err := onlyFields(h, hp, "name", "string_match", "present_match", "invert_match", "treat_missing_header_as_empty"); err != nil {
			return rm, err
		}
		hm := headerMatch{name: strings.ToLower(h.GetName()), invert: h.GetInvertMatch(), missingAsEmpty: h.GetTreatMissingHeaderAsEmpty()}
		if hm.name == "" {
			return rm, fmt.Errorf("%w: %s.name is empty", ErrInvalid, hp)
		}
		if strings.HasPrefix(hm.name, ":") && !pseudoHeaders[hm.name] {
			return rm, fmt.Errorf("%w: %s.name: pseudo-header %q (only :method, :path, :authority, :scheme)", ErrUnsupported, hp, hm.name)
		}
		switch spec := h.GetHeaderMatchSpecifier().(type) {
		case *route.HeaderMatcher_PresentMatch:
			want := spec.PresentMatch
			hm.present = &want
		case *route.HeaderMatcher_StringMatch:
			f, err := parseStringMatcher(spec.StringMatch, hp+".string_match")
			if err != nil {
				return rm, err
			}
			hm.str = f
		default:
			return rm, fmt.Errorf("%w: %s has neither string_match nor present_match", ErrInvalid, hp)
		}
		rm.headers = append(rm.headers, hm)
	}
	for i, q := range m.GetQueryParameters() {
		qp := fmt.Sprintf("%s.query_parameters[%d]", path, i)
		if err := onlyFields(q, qp, "name", "string_match", "present_match"); err != nil {
			return rm, err
		}
		qm := queryMatch{name: q.GetName()}
		if qm.name == "" {
			return rm, fmt.Errorf("%w: %s.name is empty", ErrInvalid, qp)
		}
		switch spec := q.GetQueryParameterMatchSpecifier().(type) {
		case *route.QueryParameterMatcher_PresentMatch:
			if !spec.PresentMatch {
				return rm, fmt.Errorf("%w: %s.present_match false (only true)", ErrUnsupported, qp)
			}
		case *route.QueryParameterMatcher_StringMatch:
			f, err := parseStringMatcher(spec.StringMatch, qp+".string_match")
			if err != nil {
				return rm, err
			}
			qm.str = f
		default:
			return rm, fmt.Errorf("%w: %s has neither string_match nor present_match", ErrInvalid, qp)
		}
		rm.query = append(rm.query, qm)
	}
	return rm, nil
}

var pseudoHeaders = map[string]bool{":method": true, ":path": true, ":authority": true, ":scheme": true}

func parseRouteAction(a *route.RouteAction, path string) (*routeAction, error) {
	if err := onlyFields(a, path, "cluster", "weighted_clusters", "timeout", "idle_timeout", "prefix_rewrite", "retry_policy", "hash_policy"); err != nil {
		return nil, err
	}
	s := &routeAction{timeout: defaultRouteTimeout, prefixRewrite: a.GetPrefixRewrite()}
	switch {
	case a.GetCluster() != "":
		s.clusters = []routeCluster{{name: a.GetCluster(), weight: 1}}
	case a.GetWeightedClusters() != nil:
		wc := a.GetWeightedClusters()
		wp := path + ".weighted_clusters"
		if err := onlyFields(wc, wp, "clusters"); err != nil {
			return nil, err
		}
		for i, c := range wc.GetClusters() {
			cp := fmt.Sprintf("%s.clusters[%d]", wp, i)
			if err := onlyFields(c, cp, "name", "weight", "request_headers_to_add", "request_headers_to_remove",
				"response_headers_to_add", "response_headers_to_remove"); err != nil {
				return nil, err
			}
			if c.GetName() == "" {
				return nil, fmt.Errorf("%w: %s.name is empty", ErrInvalid, cp)
			}
			rc := routeCluster{name: c.GetName(), weight: c.GetWeight().GetValue()}
			var err error
			if rc.reqHeaders, err = parseHeaderMutation(c.GetRequestHeadersToAdd(), c.GetRequestHeadersToRemove(), cp, "request"); err != nil {
				return nil, err
			}
			if rc.respHeaders, err = parseHeaderMutation(c.GetResponseHeadersToAdd(), c.GetResponseHeadersToRemove(), cp, "response"); err != nil {
				return nil, err
			}
			if rc.weight > 0 {
				s.clusters = append(s.clusters, rc)
			}
		}
		if len(s.clusters) == 0 {
			return nil, fmt.Errorf("%w: %s: no cluster has a weight", ErrInvalid, wp)
		}
	default:
		return nil, fmt.Errorf("%w: %s names no cluster (cluster or weighted_clusters)", ErrInvalid, path)
	}
	for _, c := range s.clusters {
		s.total += uint64(c.weight)
	}
	if d := a.GetTimeout(); d != nil {
		if s.timeout = d.AsDuration(); s.timeout < 0 {
			return nil, fmt.Errorf("%w: %s.timeout is negative", ErrInvalid, path)
		}
	}
	if d := a.GetIdleTimeout(); d != nil {
		if s.idle = d.AsDuration(); s.idle < 0 {
			return nil, fmt.Errorf("%w: %s.idle_timeout is negative", ErrInvalid, path)
		}
		s.hasIdle = true
	}
	if rp := a.GetRetryPolicy(); rp != nil {
		r, err := parseRetryPolicy(rp, path+".retry_policy")
		if err != nil {
			return nil, err
		}
		s.retry = r
	}
	for i, hp := range a.GetHashPolicy() {
		h, err := parseHashPolicy(hp, fmt.Sprintf("%s.hash_policy[%d]", path, i))
		if err != nil {
			return nil, err
		}
		s.hash = append(s.hash, h)
	}
	return s, nil
}

func parseRetryPolicy(rp *route.RetryPolicy, path string) (*retrySpec, error) {
	if err := onlyFields(rp, path, "retry_on", "num_retries", "per_try_timeout", "retriable_status_codes", "retry_back_off"); err != nil {
		return nil, err
	}
	r := &retrySpec{num: 1, base: defaultRetryBase}
	for c := range strings.SplitSeq(rp.GetRetryOn(), ",") {
		c = strings.TrimSpace(c)
		if c == "" {
			continue
		}
		bit, ok := retryOnNames[c]
		if !ok {
			return nil, fmt.Errorf("%w: %s.retry_on %q", ErrUnsupported, path, c)
		}
		r.on |= bit
	}
	if n := rp.GetNumRetries(); n != nil {
		r.num = int(min(n.GetValue(), 100))
	}
	if d := rp.GetPerTryTimeout(); d != nil {
		if r.perTry = d.AsDuration(); r.perTry < 0 {
			return nil, fmt.Errorf("%w: %s.per_try_timeout is negative", ErrInvalid, path)
		}
	}
	for i, c := range rp.GetRetriableStatusCodes() {
		if c < 100 || c > 599 {
			return nil, fmt.Errorf("%w: %s.retriable_status_codes[%d]: %d is not an HTTP status", ErrInvalid, path, i, c)
		}
	}
	r.codes = rp.GetRetriableStatusCodes()
	if b := rp.GetRetryBackOff(); b != nil {
		bp := path + ".retry_back_off"
		if err := onlyFields(b, bp, "base_interval", "max_interval"); err != nil {
			return nil, err
		}
		if r.base = b.GetBaseInterval().AsDuration(); r.base <= 0 {
			return nil, fmt.Errorf("%w: %s.base_interval must be positive", ErrInvalid, bp)
		}
		if b.GetMaxInterval() != nil {
			if r.maxDelay = b.GetMaxInterval().AsDuration(); r.maxDelay < r.base {
				return nil, fmt.Errorf("%w: %s.max_interval is less than base_interval", ErrInvalid, bp)
			}
		}
	}
	if r.maxDelay == 0 {
		r.maxDelay = 10 * r.base
	}
	return r, nil
}

func parseHashPolicy(hp *route.RouteAction_HashPolicy, path string) (hashSpec, error) {
	var h hashSpec
	if err := onlyFields(hp, path, "header", "cookie", "connection_properties", "query_parameter", "terminal"); err != nil {
		return h, err
	}
	h.terminal = hp.GetTerminal()
	switch p := hp.GetPolicySpecifier().(type) {
	case *route.RouteAction_HashPolicy_Header_:
		if err := onlyFields(p.Header, path+".header", "header_name"); err != nil {
			return h, err
		}
		h.kind, h.name = hashHeader, strings.ToLower(p.Header.GetHeaderName())
	case *route.RouteAction_HashPolicy_Cookie_:
		if err := onlyFields(p.Cookie, path+".cookie", "name", "ttl", "path"); err != nil {
			return h, err
		}
		h.kind, h.name, h.path = hashCookie, p.Cookie.GetName(), p.Cookie.GetPath()
		if t := p.Cookie.GetTtl(); t != nil {
			h.hasTTL, h.ttl = true, t.AsDuration()
			if h.ttl < 0 {
				return h, fmt.Errorf("%w: %s.cookie.ttl is negative", ErrInvalid, path)
			}
		}
	case *route.RouteAction_HashPolicy_QueryParameter_:
		if err := onlyFields(p.QueryParameter, path+".query_parameter", "name"); err != nil {
			return h, err
		}
		h.kind, h.name = hashQuery, p.QueryParameter.GetName()
	case *route.RouteAction_HashPolicy_ConnectionProperties_:
		if err := onlyFields(p.ConnectionProperties, path+".connection_properties", "source_ip"); err != nil {
			return h, err
		}
		if !p.ConnectionProperties.GetSourceIp() {
			return h, fmt.Errorf("%w: %s.connection_properties.source_ip is false", ErrInvalid, path)
		}
		h.kind = hashSourceIP
	default:
		return h, fmt.Errorf("%w: %s has no policy", ErrInvalid, path)
	}
	if h.kind != hashSourceIP && h.name == "" {
		return h, fmt.Errorf("%w: %s names no header, cookie or parameter", ErrInvalid, path)
	}
	return h, nil
}

// parseHeaderMutation reads one level's *_headers_to_add and
// *_headers_to_remove (which "request" or "response"). As in Envoy, the
// pseudo-headers and host cannot be changed, and a value is a format
// string: only "%%" (a literal %) is supported in it.
func parseHeaderMutation(adds []*core.HeaderValueOption, removes []string, path, which string) (headerMutation, error) {
	var m headerMutation
	forbidden := func(k string) bool {
		return strings.HasPrefix(k, ":") || (which == "request" && k == "host")
	}
	for i, r := range removes {
		k := strings.ToLower(r)
		if k == "" || forbidden(k) {
			return m, fmt.Errorf("%w: %s.%s_headers_to_remove[%d]: %q cannot be removed", ErrInvalid, path, which, i, r)
		}
		m.remove = append(m.remove, http.CanonicalHeaderKey(k))
	}
	for i, o := range adds {
		op := fmt.Sprintf("%s.%s_headers_to_add[%d]", path, which, i)
		// (the deprecated append is refused: append_action says it)
		if err := onlyFields(o, op, "header", "append_action"); err != nil {
			return m, err
		}
		if err := onlyFields(o.GetHeader(), op+".header", "key", "value"); err != nil {
			return m, err
		}
		k := strings.ToLower(o.GetHeader().GetKey())
		if k == "" || forbidden(k) {
			return m, fmt.Errorf("%w: %s.header.key: %q cannot be set", ErrInvalid, op, o.GetHeader().GetKey())
		}
		v := o.GetHeader().GetValue()
		if strings.Contains(strings.ReplaceAll(v, "%%", ""), "%") {
			return m, fmt.Errorf("%w: %s.header.value %q: header formatters (%%VAR%%) are not supported", ErrUnsupported, op, v)
		}
		a := headerAdd{key: http.CanonicalHeaderKey(k), value: strings.ReplaceAll(v, "%%", "%"), action: o.GetAppendAction()}
		switch a.action {
		case core.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD, core.HeaderValueOption_ADD_IF_ABSENT,
			core.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD, core.HeaderValueOption_OVERWRITE_IF_EXISTS:
		default:
			return m, fmt.Errorf("%w: %s.append_action %s", ErrUnsupported, op, a.action)
		}
		if a.value == "" {
			continue // Envoy drops an empty value (keep_empty_value is false)
		}
		m.add = append(m.add, a)
	}
	return m, nil
}
