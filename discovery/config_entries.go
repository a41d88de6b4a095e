package discovery

import (
	"encoding/json"
)

// Config entries are Consul's central configuration for the discovery
// chain, in Consul's JSON shape so that `consul config write` files and
// consul/api's ConfigEntries() work unchanged. vmesh supports five kinds and,
// within them, the fields its data plane honours; every other field Consul
// defines is decoded (so strict decoding accepts a stock client) and refused
// with a 400 that names it. The two gateway kinds are kept whole, for
// Consul's tools only: vmesh runs no gateways (gateways.go).

// Config entry kinds.
const (
	KindServiceDefaults = "service-defaults"
	KindServiceRouter   = "service-router"
	KindServiceSplitter = "service-splitter"
	KindServiceResolver = "service-resolver"
)

// Load-balancing policies of a service-resolver, as Consul names them.
const (
	LBRoundRobin   = "round_robin"
	LBLeastRequest = "least_request"
	LBRandom       = "random"
	LBRingHash     = "ring_hash"
	LBMaglev       = "maglev"
)

// ConfigEntryKinds lists the supported kinds. The gateway kinds are stored
// and served for Consul's tools only (gateways.go).
var ConfigEntryKinds = []string{KindServiceDefaults, KindServiceRouter, KindServiceSplitter, KindServiceResolver, KindProxyDefaults,
	KindIngressGateway, KindTerminatingGateway}

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
	Proxy       *ProxyDefaults
	Ingress     *IngressGateway
	Terminating *TerminatingGateway
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
	case e.Proxy != nil:
		return json.Marshal(&proxyDefaultsWire{configEntryHeader: hdr, ProxyDefaults: *e.Proxy})
	case e.Ingress != nil:
		return json.Marshal(&ingressGatewayWire{configEntryHeader: hdr, IngressGateway: *e.Ingress})
	case e.Terminating != nil:
		return json.Marshal(&terminatingGatewayWire{configEntryHeader: hdr, TerminatingGateway: *e.Terminating})
	}
	return json.Marshal(&hdr)
}
