package discovery

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
)

// configEntryHeader is what every kind carries.
type configEntryHeader struct {
	Kind        string
	Name        string
	Partition   string            `json:",omitempty"`
	Namespace   string            `json:",omitempty"`
	Meta        map[string]string `json:",omitempty"`
	CreateIndex uint64
	ModifyIndex uint64
}

// The per-kind wire structs embed the stored body (its fields are promoted,
// so the JSON is flat, as Consul's) and add the fields vmesh refuses.

type serviceDefaultsWire struct {
	configEntryHeader
	ServiceDefaults
	Mode                      string          `json:",omitempty"`
	TransparentProxy          json.RawMessage `json:",omitempty"`
	MutualTLSMode             string          `json:",omitempty"`
	MeshGateway               json.RawMessage `json:",omitempty"`
	Expose                    json.RawMessage `json:",omitempty"`
	ExternalSNI               string          `json:",omitempty"`
	UpstreamConfig            json.RawMessage `json:",omitempty"`
	Destination               json.RawMessage `json:",omitempty"`
	BalanceInboundConnections string          `json:",omitempty"`
	RateLimits                json.RawMessage `json:",omitempty"`
	EnvoyExtensions           json.RawMessage `json:",omitempty"`
	MaxRequestHeadersKB       json.RawMessage `json:",omitempty"`
}

type serviceRouterWire struct {
	configEntryHeader
	ServiceRouter
}

type serviceSplitterWire struct {
	configEntryHeader
	ServiceSplitter
}

type serviceResolverWire struct {
	configEntryHeader
	ServiceResolver
	DefaultSubset        string          `json:",omitempty"`
	Subsets              json.RawMessage `json:",omitempty"`
	Failover             json.RawMessage `json:",omitempty"`
	PrioritizeByLocality json.RawMessage `json:",omitempty"`
}

// DecodeConfigEntry decodes and validates a config entry in Consul's JSON
// shape (the body of PUT /v1/config). Decoding is strict; every problem is
// reported, each naming its field; the error wraps ErrInvalid.
func DecodeConfigEntry(body []byte) (*ConfigEntry, error) {
	var head struct{ Kind string }
	if err := json.Unmarshal(body, &head); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, DecodeError(err))
	}
	var (
		hdr  *configEntryHeader
		wire any
		e    = &ConfigEntry{}
	)
	switch head.Kind {
	case KindServiceDefaults:
		w := &serviceDefaultsWire{}
		hdr, wire, e.Defaults = &w.configEntryHeader, w, &w.ServiceDefaults
	case KindServiceRouter:
		w := &serviceRouterWire{}
		hdr, wire, e.Router = &w.configEntryHeader, w, &w.ServiceRouter
	case KindServiceSplitter:
		w := &serviceSplitterWire{}
		hdr, wire, e.Splitter = &w.configEntryHeader, w, &w.ServiceSplitter
	case KindServiceResolver:
		w := &serviceResolverWire{}
		hdr, wire, e.Resolver = &w.configEntryHeader, w, &w.ServiceResolver
	case KindProxyDefaults:
		w := &proxyDefaultsWire{}
		hdr, wire, e.Proxy = &w.configEntryHeader, w, &w.ProxyDefaults
	case KindIngressGateway:
		w := &ingressGatewayWire{}
		hdr, wire, e.Ingress = &w.configEntryHeader, w, &w.IngressGateway
	case KindTerminatingGateway:
		w := &terminatingGatewayWire{}
		hdr, wire, e.Terminating = &w.configEntryHeader, w, &w.TerminatingGateway
	case "":
		return nil, fmt.Errorf("%w: Kind: missing", ErrInvalid)
	default:
		return nil, fmt.Errorf("%w: Kind: %q is not supported; one of %s", ErrInvalid, head.Kind, strings.Join(ConfigEntryKinds, ", "))
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(wire); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, DecodeError(err))
	}
	var errs problems
	bad := errs.bad
	// The kind's own unsupported fields: everything the wire struct adds
	// beyond the header and the stored body.
	for _, f := range setFields("", wire, "configEntryHeader", "ServiceDefaults", "ServiceRouter", "ServiceSplitter", "ServiceResolver", "ProxyDefaults", "IngressGateway", "TerminatingGateway") {
		bad(f, "not supported by vmesh")
	}
	e.Kind, e.Name, e.Meta = hdr.Kind, hdr.Name, hdr.Meta
	validServiceName("Name", e.Name, true, bad)
	defaultOnly("Namespace", hdr.Namespace, bad)
	defaultOnly("Partition", hdr.Partition, bad)
	e.validate(bad)
	if err := errs.err(); err != nil {
		return nil, err
	}
	return e, nil
}

func validServiceName(field, name string, required bool, bad func(field, format string, args ...any)) {
	switch {
	case strings.TrimSpace(name) == "":
		if required {
			bad(field, "missing")
		}
	case strings.ContainsAny(name, "/ \t\n"):
		bad(field, "%q may not contain '/' or white space", name)
	}
}

func defaultOnly(field, v string, bad func(field, format string, args ...any)) {
	if v != "" && v != "default" {
		bad(field, "%q: only the default one exists", v)
	}
}

func (e *ConfigEntry) validate(bad func(field, format string, args ...any)) {
	switch {
	case e.Defaults != nil:
		d := e.Defaults
		if d.Protocol != "" && !ValidProtocol(d.Protocol) {
			bad("Protocol", "%q is not one of %s", d.Protocol, strings.Join(Protocols, ", "))
		}
		for _, f := range []struct {
			name string
			v    int
		}{{"MaxInboundConnections", d.MaxInboundConnections}, {"LocalConnectTimeoutMs", d.LocalConnectTimeoutMs}, {"LocalRequestTimeoutMs", d.LocalRequestTimeoutMs}} {
			if f.v < 0 {
				bad(f.name, "must not be negative, got %d", f.v)
			}
		}
	case e.Router != nil:
		for i, r := range e.Router.Routes {
			validateRoute(fmt.Sprintf("Routes[%d].", i), &r, bad)
		}
	case e.Splitter != nil:
		validateSplitter(e.Splitter, bad)
	case e.Resolver != nil:
		validateResolver(e.Name, e.Resolver, bad)
	case e.Proxy != nil:
		validateProxyDefaults(e.Name, e.Proxy, bad)
	case e.Ingress != nil:
		e.Ingress.normalize()
		validateIngressGateway(e.Ingress, bad)
		validateIntentionMeta("Meta", e.Meta, bad)
	case e.Terminating != nil:
		validateTerminatingGateway(e.Terminating, bad)
		validateIntentionMeta("Meta", e.Meta, bad)
	}
}

// headerName is a valid HTTP header name (RFC 9110 token).
var headerName = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

// methodName is an HTTP method as Envoy matches it.
var methodName = regexp.MustCompile("^[A-Z]+$")

func validateRegex(field, re string, bad func(field, format string, args ...any)) {
	// Go's regexp syntax is RE2's, which is what Envoy runs.
	if _, err := regexp.Compile(re); err != nil {
		bad(field, "invalid regular expression: %v", err)
	}
}

func validateRoute(field string, r *ServiceRoute, bad func(field, format string, args ...any)) {
	pathMatch := false
	if r.Match != nil && r.Match.HTTP != nil {
		h := r.Match.HTTP
		f := field + "Match.HTTP."
		paths := 0
		for _, p := range []struct{ name, v string }{{"PathExact", h.PathExact}, {"PathPrefix", h.PathPrefix}, {"PathRegex", h.PathRegex}} {
			if p.v == "" {
				continue
			}
			paths++
			if p.name != "PathRegex" && !strings.HasPrefix(p.v, "/") {
				bad(f+p.name, "%q must start with /", p.v)
			}
		}
		if paths > 1 {
			bad(f+"PathExact", "set at most one of PathExact, PathPrefix and PathRegex")
		}
		if h.PathRegex != "" {
			validateRegex(f+"PathRegex", h.PathRegex, bad)
		}
		pathMatch = h.PathExact != "" || h.PathPrefix != ""
		for j, hdr := range h.Header {
			hf := fmt.Sprintf("%sHeader[%d].", f, j)
			if !headerName.MatchString(strings.TrimPrefix(hdr.Name, ":")) {
				bad(hf+"Name", "%q is not a header name", hdr.Name)
			}
			n := 0
			for _, set := range []bool{hdr.Present, hdr.Exact != "", hdr.Prefix != "", hdr.Suffix != "", hdr.Contains != "", hdr.Regex != ""} {
				if set {
					n++
				}
			}
			if n != 1 {
				bad(hf+"Present", "set exactly one of Present, Exact, Prefix, Suffix, Contains and Regex")
			}
			if hdr.Regex != "" {
				validateRegex(hf+"Regex", hdr.Regex, bad)
			}
			if hdr.IgnoreCase && (hdr.Present || hdr.Regex != "") {
				bad(hf+"IgnoreCase", "applies to Exact, Prefix, Suffix and Contains only")
			}
		}
		for j, q := range h.QueryParam {
			qf := fmt.Sprintf("%sQueryParam[%d].", f, j)
			if q.Name == "" {
				bad(qf+"Name", "missing")
			}
			n := 0
			for _, set := range []bool{q.Present, q.Exact != "", q.Regex != ""} {
				if set {
					n++
				}
			}
			if n != 1 {
				bad(qf+"Present", "set exactly one of Present, Exact and Regex")
			}
			if q.Regex != "" {
				validateRegex(qf+"Regex", q.Regex, bad)
			}
		}
		seen := map[string]bool{}
		for j, m := range h.Methods {
			if !methodName.MatchString(m) {
				bad(fmt.Sprintf("%sMethods[%d]", f, j), "%q is not an upper-case HTTP method", m)
			} else if seen[m] {
				bad(fmt.Sprintf("%sMethods[%d]", f, j), "%q is listed twice", m)
			}
			seen[m] = true
		}
	}
	d := r.Destination
	if d == nil {
		return
	}
	f := field + "Destination."
	validServiceName(f+"Service", d.Service, false, bad)
	if d.ServiceSubset != "" {
		bad(f+"ServiceSubset", "not supported yet: service-resolver subsets are not")
	}
	defaultOnly(f+"Namespace", d.Namespace, bad)
	defaultOnly(f+"Partition", d.Partition, bad)
	if d.PrefixRewrite != "" && !pathMatch {
		bad(f+"PrefixRewrite", "needs Match.HTTP.PathPrefix or Match.HTTP.PathExact")
	}
	if d.RequestTimeout < 0 {
		bad(f+"RequestTimeout", "must not be negative")
	}
	if d.IdleTimeout < 0 {
		bad(f+"IdleTimeout", "must not be negative")
	}
	for j, c := range d.RetryOnStatusCodes {
		if c < 100 || c > 599 {
			bad(fmt.Sprintf("%sRetryOnStatusCodes[%d]", f, j), "%d is not an HTTP status code", c)
		}
	}
	for j, c := range d.RetryOn {
		if !slices.Contains(RetryOnConditions, c) {
			bad(fmt.Sprintf("%sRetryOn[%d]", f, j), "%q is not one of %s", c, strings.Join(RetryOnConditions, ", "))
		}
	}
	validateHeaders(f+"RequestHeaders.", d.RequestHeaders, bad)
	validateHeaders(f+"ResponseHeaders.", d.ResponseHeaders, bad)
}

// RetryOnConditions are the values Consul accepts in RetryOn (Envoy's
// x-envoy-retry-on and x-envoy-retry-grpc-on conditions).
var RetryOnConditions = []string{
	"5xx", "gateway-error", "reset", "connect-failure", "envoy-ratelimited", "retriable-4xx",
	"refused-stream", "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
}

func validateHeaders(field string, h *HTTPHeaderModifiers, bad func(field, format string, args ...any)) {
	if h == nil {
		return
	}
	check := func(f, name string) {
		// Pseudo-headers and Host are the proxy's to set, not a route's.
		if !headerName.MatchString(name) || strings.EqualFold(name, "host") {
			bad(f, "%q is not a header a route may change", name)
		}
	}
	for k := range h.Add {
		check(field+"Add", k)
	}
	for k := range h.Set {
		check(field+"Set", k)
	}
	for j, k := range h.Remove {
		check(fmt.Sprintf("%sRemove[%d]", field, j), k)
	}
}

func validateSplitter(s *ServiceSplitter, bad func(field, format string, args ...any)) {
	if len(s.Splits) == 0 {
		bad("Splits", "at least one split is needed")
		return
	}
	var sum float64
	for i, sp := range s.Splits {
		f := fmt.Sprintf("Splits[%d].", i)
		w := float64(sp.Weight)
		if math.IsNaN(w) || w < 0 || w > 100 {
			bad(f+"Weight", "must be between 0 and 100, got %v", sp.Weight)
		}
		sum += w
		validServiceName(f+"Service", sp.Service, false, bad)
		if sp.ServiceSubset != "" {
			bad(f+"ServiceSubset", "not supported yet: service-resolver subsets are not")
		}
		defaultOnly(f+"Namespace", sp.Namespace, bad)
		defaultOnly(f+"Partition", sp.Partition, bad)
		validateHeaders(f+"RequestHeaders.", sp.RequestHeaders, bad)
		validateHeaders(f+"ResponseHeaders.", sp.ResponseHeaders, bad)
	}
	// Weights have two decimals, as in Consul; the data plane scales them
	// to integers that must total exactly 10000.
	if math.Round(sum*100) != 10000 {
		bad("Splits", "weights must add up to 100, got %v", math.Round(sum*100)/100)
	}
}

// maxRingSize is Envoy's upper bound on a ring.
const maxRingSize = 8 * 1024 * 1024

func validateResolver(self string, r *ServiceResolver, bad func(field, format string, args ...any)) {
	if r.ConnectTimeout < 0 {
		bad("ConnectTimeout", "must not be negative")
	}
	if r.RequestTimeout < 0 {
		bad("RequestTimeout", "must not be negative")
	}
	if rd := r.Redirect; rd != nil {
		for _, f := range setFields("Redirect.", rd, "Service", "Namespace", "Partition") {
			bad(f, "not supported yet; only Redirect.Service is")
		}
		defaultOnly("Redirect.Namespace", rd.Namespace, bad)
		defaultOnly("Redirect.Partition", rd.Partition, bad)
		validServiceName("Redirect.Service", rd.Service, true, bad)
		if strings.EqualFold(rd.Service, self) {
			bad("Redirect.Service", "a service cannot redirect to itself")
		}
	}
	lb := r.LoadBalancer
	if lb == nil {
		return
	}
	hashing := lb.Policy == LBRingHash || lb.Policy == LBMaglev
	switch lb.Policy {
	case "", LBRoundRobin, LBLeastRequest, LBRandom, LBRingHash, LBMaglev:
	default:
		bad("LoadBalancer.Policy", "%q is not one of %s", lb.Policy, strings.Join([]string{LBRoundRobin, LBLeastRequest, LBRandom, LBRingHash, LBMaglev}, ", "))
	}
	if c := lb.RingHashConfig; c != nil {
		if lb.Policy != LBRingHash {
			bad("LoadBalancer.RingHashConfig", "applies to ring_hash only")
		}
		if c.MaximumRingSize > maxRingSize || c.MinimumRingSize > maxRingSize {
			bad("LoadBalancer.RingHashConfig", "ring sizes must be at most %d", maxRingSize)
		}
		if c.MaximumRingSize != 0 && c.MinimumRingSize > c.MaximumRingSize {
			bad("LoadBalancer.RingHashConfig.MinimumRingSize", "must not exceed MaximumRingSize")
		}
	}
	if c := lb.LeastRequestConfig; c != nil {
		if lb.Policy != LBLeastRequest {
			bad("LoadBalancer.LeastRequestConfig", "applies to least_request only")
		}
		if c.ChoiceCount == 1 {
			bad("LoadBalancer.LeastRequestConfig.ChoiceCount", "must be at least 2")
		}
	}
	if len(lb.HashPolicies) > 0 && !hashing {
		bad("LoadBalancer.HashPolicies", "apply to ring_hash and maglev only")
	}
	for i, hp := range lb.HashPolicies {
		f := fmt.Sprintf("LoadBalancer.HashPolicies[%d].", i)
		switch hp.Field {
		case "":
			if !hp.SourceIP {
				bad(f+"Field", "set Field (header, cookie or query_parameter) or SourceIP")
			}
			if hp.FieldValue != "" {
				bad(f+"FieldValue", "needs Field")
			}
		case "header", "cookie", "query_parameter":
			if hp.SourceIP {
				bad(f+"SourceIP", "cannot be combined with Field")
			}
			if hp.FieldValue == "" {
				bad(f+"FieldValue", "missing: the name of the %s", hp.Field)
			}
		default:
			bad(f+"Field", "%q is not one of header, cookie, query_parameter", hp.Field)
		}
		if c := hp.CookieConfig; c != nil {
			if hp.Field != "cookie" {
				bad(f+"CookieConfig", "applies to Field cookie only")
			}
			if c.Session && c.TTL != 0 {
				bad(f+"CookieConfig.TTL", "a session cookie has no TTL")
			}
			if c.TTL < 0 {
				bad(f+"CookieConfig.TTL", "must not be negative")
			}
		}
	}
}

// ---- store ----
