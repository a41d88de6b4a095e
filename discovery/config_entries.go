package discovery

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"

	"github.com/hashicorp/go-memdb"
)

// Config entries are Consul's central configuration for the discovery
// chain, in Consul's JSON shape so that `consul config write` files and
// consul/api's ConfigEntries() work unchanged. vmesh supports four kinds and,
// within them, the fields its data plane honours; every other field Consul
// defines is decoded (so strict decoding accepts a stock client) and refused
// with a 400 that names it.

// Config entry kinds.
const (
	KindServiceDefaults = "service-defaults"
	KindServiceRouter   = "service-router"
	KindServiceSplitter = "service-splitter"
	KindServiceResolver = "service-resolver"
)

// ConfigEntryKinds lists the supported kinds.
var ConfigEntryKinds = []string{KindServiceDefaults, KindServiceRouter, KindServiceSplitter, KindServiceResolver}

// Load-balancing policies of a service-resolver, as Consul names them.
const (
	LBRoundRobin   = "round_robin"
	LBLeastRequest = "least_request"
	LBRandom       = "random"
	LBRingHash     = "ring_hash"
	LBMaglev       = "maglev"
)

// ConfigEntry is one stored config entry: a kind, the service it configures
// and exactly one body, the one its kind names.
type ConfigEntry struct {
	Kind        string
	Name        string
	Meta        map[string]string
	Defaults    *ServiceDefaults
	Router      *ServiceRouter
	Splitter    *ServiceSplitter
	Resolver    *ServiceResolver
	CreateIndex uint64
	ModifyIndex uint64
}

// ServiceDefaults is the body of a service-defaults entry.
type ServiceDefaults struct {
	// Protocol, when set, is the service's protocol whatever its instances
	// say (Consul's rule: central config wins).
	Protocol string `json:",omitempty" hcl:"protocol"`
	// MaxInboundConnections caps connections the host's proxy opens to the
	// local instances (0: Envoy's default).
	MaxInboundConnections int `json:",omitempty" hcl:"max_inbound_connections"`
	// LocalConnectTimeoutMs and LocalRequestTimeoutMs bound the hop from
	// the host's proxy to the local instance (0: 5 s and none).
	LocalConnectTimeoutMs int `json:",omitempty" hcl:"local_connect_timeout_ms"`
	LocalRequestTimeoutMs int `json:",omitempty" hcl:"local_request_timeout_ms"`
}

// ServiceRouter is the body of a service-router entry: routes tried in
// order; a request no route matches goes to the service itself.
type ServiceRouter struct {
	Routes []ServiceRoute `json:",omitempty" hcl:"routes"`
}

// ServiceRoute is one route of a service-router.
type ServiceRoute struct {
	Match       *ServiceRouteMatch       `json:",omitempty" hcl:"match"`
	Destination *ServiceRouteDestination `json:",omitempty" hcl:"destination"`
}

// ServiceRouteMatch says which requests a route takes (nil: all).
type ServiceRouteMatch struct {
	HTTP *ServiceRouteHTTPMatch `json:",omitempty" hcl:"http"`
}

// ServiceRouteHTTPMatch matches on path, headers, query and method; every
// condition set must hold.
type ServiceRouteHTTPMatch struct {
	PathExact       string                            `json:",omitempty" hcl:"path_exact"`
	PathPrefix      string                            `json:",omitempty" hcl:"path_prefix"`
	PathRegex       string                            `json:",omitempty" hcl:"path_regex"`
	CaseInsensitive bool                              `json:",omitempty" hcl:"case_insensitive"`
	Header          []ServiceRouteHTTPMatchHeader     `json:",omitempty" hcl:"header"`
	QueryParam      []ServiceRouteHTTPMatchQueryParam `json:",omitempty" hcl:"query_param"`
	Methods         []string                          `json:",omitempty" hcl:"methods"`
}

// ServiceRouteHTTPMatchHeader matches one header; exactly one of Present,
// Exact, Prefix, Suffix, Contains and Regex is set.
type ServiceRouteHTTPMatchHeader struct {
	Name       string `hcl:"name"`
	Present    bool   `json:",omitempty" hcl:"present"`
	Exact      string `json:",omitempty" hcl:"exact"`
	Prefix     string `json:",omitempty" hcl:"prefix"`
	Suffix     string `json:",omitempty" hcl:"suffix"`
	Contains   string `json:",omitempty" hcl:"contains"`
	Regex      string `json:",omitempty" hcl:"regex"`
	IgnoreCase bool   `json:",omitempty" hcl:"ignore_case"`
	Invert     bool   `json:",omitempty" hcl:"invert"`
}

// ServiceRouteHTTPMatchQueryParam matches one query parameter; exactly one
// of Present, Exact and Regex is set.
type ServiceRouteHTTPMatchQueryParam struct {
	Name    string `hcl:"name"`
	Present bool   `json:",omitempty" hcl:"present"`
	Exact   string `json:",omitempty" hcl:"exact"`
	Regex   string `json:",omitempty" hcl:"regex"`
}

// ServiceRouteDestination is where a route sends what it matches, and how.
type ServiceRouteDestination struct {
	// Service defaults to the router's own service.
	Service               string               `json:",omitempty" hcl:"service"`
	ServiceSubset         string               `json:",omitempty" hcl:"service_subset"`
	Namespace             string               `json:",omitempty" hcl:"namespace"`
	Partition             string               `json:",omitempty" hcl:"partition"`
	PrefixRewrite         string               `json:",omitempty" hcl:"prefix_rewrite"`
	RequestTimeout        Duration             `json:",omitempty" hcl:"request_timeout"`
	IdleTimeout           Duration             `json:",omitempty" hcl:"idle_timeout"`
	NumRetries            uint32               `json:",omitempty" hcl:"num_retries"`
	RetryOnConnectFailure bool                 `json:",omitempty" hcl:"retry_on_connect_failure"`
	RetryOnStatusCodes    []uint32             `json:",omitempty" hcl:"retry_on_status_codes"`
	RetryOn               []string             `json:",omitempty" hcl:"retry_on"`
	RequestHeaders        *HTTPHeaderModifiers `json:",omitempty" hcl:"request_headers"`
	ResponseHeaders       *HTTPHeaderModifiers `json:",omitempty" hcl:"response_headers"`
}

// HTTPHeaderModifiers adds, sets and removes headers.
type HTTPHeaderModifiers struct {
	Add    map[string]string `json:",omitempty" hcl:"add"`
	Set    map[string]string `json:",omitempty" hcl:"set"`
	Remove []string          `json:",omitempty" hcl:"remove"`
}

// ServiceSplitter is the body of a service-splitter entry.
type ServiceSplitter struct {
	Splits []ServiceSplit `json:",omitempty" hcl:"splits"`
}

// ServiceSplit sends Weight percent of the traffic to Service (default:
// the splitter's own service).
type ServiceSplit struct {
	Weight          float32              `hcl:"weight"`
	Service         string               `json:",omitempty" hcl:"service"`
	ServiceSubset   string               `json:",omitempty" hcl:"service_subset"`
	Namespace       string               `json:",omitempty" hcl:"namespace"`
	Partition       string               `json:",omitempty" hcl:"partition"`
	RequestHeaders  *HTTPHeaderModifiers `json:",omitempty" hcl:"request_headers"`
	ResponseHeaders *HTTPHeaderModifiers `json:",omitempty" hcl:"response_headers"`
}

// ServiceResolver is the body of a service-resolver entry.
type ServiceResolver struct {
	// ConnectTimeout bounds connecting to an instance (0: 5 s).
	ConnectTimeout Duration `json:",omitempty" hcl:"connect_timeout"`
	// RequestTimeout is the default timeout of routes to the service.
	RequestTimeout Duration                 `json:",omitempty" hcl:"request_timeout"`
	Redirect       *ServiceResolverRedirect `json:",omitempty" hcl:"redirect"`
	LoadBalancer   *LoadBalancer            `json:",omitempty" hcl:"load_balancer"`
}

// ServiceResolverRedirect sends the service's traffic to another service.
// Only Service is supported.
type ServiceResolverRedirect struct {
	Service       string `json:",omitempty" hcl:"service"`
	ServiceSubset string `json:",omitempty" hcl:"service_subset"`
	Namespace     string `json:",omitempty" hcl:"namespace"`
	Partition     string `json:",omitempty" hcl:"partition"`
	Datacenter    string `json:",omitempty" hcl:"datacenter"`
	Peer          string `json:",omitempty" hcl:"peer"`
	SamenessGroup string `json:",omitempty" hcl:"sameness_group"`
}

// LoadBalancer picks the load-balancing policy of a service.
type LoadBalancer struct {
	Policy             string              `json:",omitempty" hcl:"policy"`
	RingHashConfig     *RingHashConfig     `json:",omitempty" hcl:"ring_hash_config"`
	LeastRequestConfig *LeastRequestConfig `json:",omitempty" hcl:"least_request_config"`
	HashPolicies       []HashPolicy        `json:",omitempty" hcl:"hash_policies"`
}

// RingHashConfig sizes the ring of ring_hash.
type RingHashConfig struct {
	MinimumRingSize uint64 `json:",omitempty" hcl:"minimum_ring_size"`
	MaximumRingSize uint64 `json:",omitempty" hcl:"maximum_ring_size"`
}

// LeastRequestConfig tunes least_request.
type LeastRequestConfig struct {
	ChoiceCount uint32 `json:",omitempty" hcl:"choice_count"`
}

// HashPolicy says what a ring_hash or maglev request is hashed on.
type HashPolicy struct {
	Field        string        `json:",omitempty" hcl:"field"`
	FieldValue   string        `json:",omitempty" hcl:"field_value"`
	CookieConfig *CookieConfig `json:",omitempty" hcl:"cookie_config"`
	SourceIP     bool          `json:",omitempty" hcl:"source_ip"`
	Terminal     bool          `json:",omitempty" hcl:"terminal"`
}

// CookieConfig makes the proxy set the hash cookie when it is missing.
type CookieConfig struct {
	Session bool     `json:",omitempty" hcl:"session"`
	TTL     Duration `json:",omitempty" hcl:"ttl"`
	Path    string   `json:",omitempty" hcl:"path"`
}

// ---- wire shapes ----

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
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	// The kind's own unsupported fields: everything the wire struct adds
	// beyond the header and the stored body.
	for _, f := range setFields("", wire, "configEntryHeader", "ServiceDefaults", "ServiceRouter", "ServiceSplitter", "ServiceResolver") {
		bad(f, "not supported by vmesh")
	}
	e.Kind, e.Name, e.Meta = hdr.Kind, hdr.Name, hdr.Meta
	validServiceName("Name", e.Name, true, bad)
	defaultOnly("Namespace", hdr.Namespace, bad)
	defaultOnly("Partition", hdr.Partition, bad)
	e.validate(bad)
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
	}
	return e, nil
}

// MarshalJSON renders the entry in Consul's flat shape.
func (e *ConfigEntry) MarshalJSON() ([]byte, error) {
	hdr := configEntryHeader{Kind: e.Kind, Name: e.Name, Meta: e.Meta, CreateIndex: e.CreateIndex, ModifyIndex: e.ModifyIndex}
	switch {
	case e.Defaults != nil:
		return json.Marshal(&serviceDefaultsWire{configEntryHeader: hdr, ServiceDefaults: *e.Defaults})
	case e.Router != nil:
		return json.Marshal(&serviceRouterWire{configEntryHeader: hdr, ServiceRouter: *e.Router})
	case e.Splitter != nil:
		return json.Marshal(&serviceSplitterWire{configEntryHeader: hdr, ServiceSplitter: *e.Splitter})
	case e.Resolver != nil:
		return json.Marshal(&serviceResolverWire{configEntryHeader: hdr, ServiceResolver: *e.Resolver})
	}
	return json.Marshal(&hdr)
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

const tableConfigEntries = "config_entries"

func configEntryTables(tables map[string]*memdb.TableSchema) {
	tables[tableConfigEntries] = &memdb.TableSchema{Name: tableConfigEntries, Indexes: map[string]*memdb.IndexSchema{
		// Names are case-insensitive, as service names are in the catalog.
		"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
			&memdb.StringFieldIndex{Field: "Kind"}, &memdb.StringFieldIndex{Field: "Name", Lowercase: true},
		}}},
		"kind": {Name: "kind", Indexer: &memdb.StringFieldIndex{Field: "Kind"}},
	}}
}

// ConfigEntryOp is a config entry write.
type ConfigEntryOp string

// Config entry operations. The CAS forms compare Entry.ModifyIndex with
// the stored entry's (0: it must not exist) and return ErrCASConflict on a
// mismatch, changing nothing.
const (
	ConfigEntryUpsert    ConfigEntryOp = "upsert"
	ConfigEntryUpsertCAS ConfigEntryOp = "upsert-cas"
	ConfigEntryDelete    ConfigEntryOp = "delete"
	ConfigEntryDeleteCAS ConfigEntryOp = "delete-cas"
)

// ConfigEntryRequest writes a config entry.
type ConfigEntryRequest struct {
	Op    ConfigEntryOp
	Entry ConfigEntry
}

func (ConfigEntryRequest) MessageType() MessageType { return ConfigEntryType }

// ConfigEntryApply performs op on e.
func (s *Store) ConfigEntryApply(idx uint64, op ConfigEntryOp, e *ConfigEntry) error {
	db, _ := s.current()
	tx := db.Txn(true)
	defer tx.Abort()
	raw, err := tx.First(tableConfigEntries, "id", e.Kind, e.Name)
	if err != nil {
		return err
	}
	old, _ := raw.(*ConfigEntry)
	if op == ConfigEntryUpsertCAS || op == ConfigEntryDeleteCAS {
		cur := uint64(0)
		if old != nil {
			cur = old.ModifyIndex
		}
		if cur != e.ModifyIndex || (op == ConfigEntryDeleteCAS && old == nil) {
			return ErrCASConflict
		}
	}
	switch op {
	case ConfigEntryUpsert, ConfigEntryUpsertCAS:
		c := *e
		c.CreateIndex, c.ModifyIndex = idx, idx
		if old != nil {
			c.CreateIndex = old.CreateIndex
			// The first spelling of the name stays, as a KV key would.
			c.Name = old.Name
		}
		if err := tx.Insert(tableConfigEntries, &c); err != nil {
			return err
		}
	case ConfigEntryDelete, ConfigEntryDeleteCAS:
		if old == nil {
			return nil
		}
		if err := tx.Delete(tableConfigEntries, old); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w: unknown config entry operation %q", ErrInvalid, op)
	}
	if err := bumpIndex(tx, idx, tableConfigEntries); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

// ConfigEntry returns one entry, or nil.
func (s *Store) ConfigEntry(ws memdb.WatchSet, kind, name string) (uint64, *ConfigEntry, error) {
	tx := s.readTxn(ws)
	ch, raw, err := tx.FirstWatch(tableConfigEntries, "id", kind, name)
	if ws != nil {
		ws.Add(ch)
	}
	idx := maxIndex(tx, tableConfigEntries)
	if err != nil || raw == nil {
		return idx, nil, err
	}
	return idx, raw.(*ConfigEntry), nil
}

// ConfigEntries lists the entries of a kind ("" for every kind), by kind
// and name.
func (s *Store) ConfigEntries(ws memdb.WatchSet, kind string) (uint64, []*ConfigEntry, error) {
	tx := s.readTxn(ws)
	var entries []*ConfigEntry
	var err error
	if kind == "" {
		entries, err = collect[ConfigEntry](ws, tx, tableConfigEntries, "id")
	} else {
		entries, err = collect[ConfigEntry](ws, tx, tableConfigEntries, "kind", kind)
	}
	return maxIndex(tx, tableConfigEntries), entries, err
}
