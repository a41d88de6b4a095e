package proxy

import (
	"bytes"
	"sort"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// What the proxy applied, for an admin listener (Envoy's /ready,
// /listeners, /clusters and /config_dump): read under p.mu or from the
// current snapshot, never on the request path.

// appliedConfig keeps each accepted resource as it was received, with the
// version of the response that brought it and when (p.mu).
type appliedConfig struct {
	byType map[string]map[string]appliedResource
	// at is when each type was last applied.
	at map[string]time.Time
}

type appliedResource struct {
	raw     *anypb.Any
	version string
	updated time.Time
}

// recordApplied keeps what one response applied (p.mu held): raw's
// resources replace the type's, but one refused (nil) keeps its earlier
// copy, and one received again unchanged keeps its version and time, as
// Envoy's config dump shows them.
func (p *Proxy) recordApplied(typ string, raw map[string]*anypb.Any, version string) {
	a := &p.applied
	if a.byType == nil {
		a.byType, a.at = map[string]map[string]appliedResource{}, map[string]time.Time{}
	}
	now := time.Now()
	prev := a.byType[typ]
	next := make(map[string]appliedResource, len(raw))
	for name, r := range raw {
		old, had := prev[name]
		switch {
		case r == nil:
			if had {
				next[name] = old
			}
		case had && old.raw.GetTypeUrl() == r.GetTypeUrl() && bytes.Equal(old.raw.GetValue(), r.GetValue()):
			next[name] = old
		default:
			next[name] = appliedResource{raw: r, version: version, updated: now}
		}
	}
	a.byType[typ] = next
	a.at[typ] = now
}

// Readiness states, as Envoy's /ready and /server_info name them.
const (
	StatePreInitializing = "PRE_INITIALIZING" // no xDS stream yet
	StateInitializing    = "INITIALIZING"     // streaming, first listeners or clusters not applied yet
	StateLive            = "LIVE"
)

// State is the proxy's readiness: LIVE once a listener response and a
// cluster response have each been applied (the first config; listeners
// bound). It stays LIVE when the stream later breaks: the config keeps
// serving.
func (p *Proxy) State() string {
	p.mu.Lock()
	_, lds := p.applied.at[resource.ListenerType]
	_, cds := p.applied.at[resource.ClusterType]
	p.mu.Unlock()
	switch {
	case lds && cds:
		return StateLive
	case p.streams.Load() > 0:
		return StateInitializing
	default:
		return StatePreInitializing
	}
}

// NodeID is the node ID the proxy presents to the xDS server.
func (p *Proxy) NodeID() string { return p.node.GetId() }

// ListenerStatus is one listener as /listeners shows it.
type ListenerStatus struct {
	Name string `json:"name"`
	// Address is the configured one; Bound the socket's (a port 0 shows
	// the port picked), empty while the listener is warming.
	Address string `json:"address"`
	Bound   string `json:"bound,omitempty"`
}

// Listeners are the listeners of the current configuration, by name.
func (p *Proxy) Listeners() []ListenerStatus {
	snap := p.cur.Load()
	addrs := p.ListenerAddrs()
	out := make([]ListenerStatus, 0, len(snap.listeners))
	for name, l := range snap.listeners {
		ls := ListenerStatus{Name: name, Address: l.spec.addr.String()}
		if a, ok := addrs[name]; ok {
			ls.Bound = a.String()
		}
		out = append(out, ls)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ClusterStatus is one cluster as /clusters shows it.
type ClusterStatus struct {
	Name string `json:"name"`
	// Thresholds are the circuit breakers' (max_connections, ...).
	Thresholds map[string]uint64 `json:"circuit_breakers"`
	Stats      map[string]uint64 `json:"stats"`
	Hosts      []HostStatus      `json:"hosts"`
}

// HostStatus is one endpoint of a cluster in rotation (healthy or
// degraded; EDS-unhealthy ones are never used and not listed).
type HostStatus struct {
	Address string `json:"address"`
	Weight  uint32 `json:"weight"`
	// HealthFlags is Envoy's: "healthy", or flags joined by "/":
	// "degraded_eds_health", "failed_outlier_check".
	HealthFlags string            `json:"health_flags"`
	Ejected     bool              `json:"outlier_ejected"`
	Stats       map[string]uint64 `json:"stats"`
}

// Clusters are the clusters of the current configuration, by name, with
// their counters.
func (p *Proxy) Clusters() []ClusterStatus {
	snap := p.cur.Load()
	now := monoNanos(time.Now())
	out := make([]ClusterStatus, 0, len(snap.clusters))
	for name, c := range snap.clusters {
		cs := ClusterStatus{Name: name, Thresholds: c.thresholds(), Stats: c.st.stats.snapshot(c.st)}
		for _, h := range c.hosts {
			hs := HostStatus{Address: h.addr.String(), Weight: h.weight, Ejected: h.st.ejected(now), Stats: h.st.stats.snapshot(h.st)}
			var flags []string
			if !h.healthy {
				flags = append(flags, "degraded_eds_health")
			}
			if hs.Ejected {
				flags = append(flags, "failed_outlier_check")
			}
			hs.HealthFlags = "healthy"
			if len(flags) > 0 {
				hs.HealthFlags = joinFlags(flags)
			}
			cs.Hosts = append(cs.Hosts, hs)
		}
		out = append(out, cs)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func joinFlags(f []string) string {
	s := f[0]
	for _, x := range f[1:] {
		s += "/" + x
	}
	return s
}

func (c *clusterRT) thresholds() map[string]uint64 {
	b := c.spec.breakers
	out := map[string]uint64{
		"max_connections": uint64(b.maxConns), "max_pending_requests": uint64(b.maxPending),
		"max_requests": uint64(b.maxRequests), "max_retries": uint64(b.maxRetries),
	}
	if b.budget != nil {
		out["max_retries"] = uint64(b.budget.limit(c.st.requests.Load() + c.st.pending.Load()))
	}
	return out
}

func (s *clusterStats) snapshot(st *clusterState) map[string]uint64 {
	out := map[string]uint64{
		"upstream_rq_total": s.rqTotal.Load(), "upstream_rq_success": s.rqSuccess.Load(), "upstream_rq_error": s.rqError.Load(),
		"upstream_rq_retry": s.rqRetry.Load(), "upstream_cx_total": s.cxTotal.Load(), "upstream_cx_connect_fail": s.cxConnectFail.Load(),
		"upstream_cx_active": uint64(max(st.conns.Load(), 0)), "upstream_rq_active": uint64(max(st.requests.Load(), 0)),
		"upstream_rq_pending_active":                 uint64(max(st.pending.Load(), 0)),
		"outlier_detection.ejections_enforced_total": s.ejections.Load(),
		"upstream_cx_overflow":                       s.overflow[breakerConnections].Load(),
		"upstream_rq_pending_overflow":               s.overflow[breakerPending].Load(),
		"upstream_rq_overflow":                       s.overflow[breakerRequests].Load(),
		"upstream_rq_retry_overflow":                 s.overflow[breakerRetries].Load(),
	}
	return out
}

func (s *hostStats) snapshot(st *hostState) map[string]uint64 {
	return map[string]uint64{
		"rq_total": s.rqTotal.Load(), "rq_success": s.rqSuccess.Load(), "rq_error": s.rqError.Load(),
		"rq_active": uint64(max(st.active.Load(), 0)), "cx_total": s.cxTotal.Load(), "cx_connect_fail": s.cxConnectFail.Load(),
		"outlier_ejections": s.ejections.Load(),
	}
}

// Redacted replaces secret material in a config dump, as Envoy's does.
const Redacted = "[redacted]"

// ConfigDump is the configuration the proxy applied, in Envoy's
// /config_dump shape (envoy.admin.v3.ConfigDump): listeners, clusters,
// endpoints, route configurations and secrets as received, each with the
// version_info of the response that brought it and when; a listener or
// cluster still waiting for its endpoints or secrets (warming) under
// warming. Private keys and other secret values are redacted. The
// messages are the proxy's own copies' clones: the caller may keep them.
func (p *Proxy) ConfigDump() *adminv3.ConfigDump {
	p.mu.Lock()
	applied := map[string][]namedResource{}
	versions := map[string]string{}
	for typ, m := range p.applied.byType {
		for name, r := range m {
			applied[typ] = append(applied[typ], namedResource{name, r})
		}
		sort.Slice(applied[typ], func(i, j int) bool { return applied[typ][i].name < applied[typ][j].name })
		versions[typ] = p.types[typ].version
	}
	p.mu.Unlock()
	snap := p.cur.Load()
	dump := &adminv3.ConfigDump{}
	add := func(m proto.Message) {
		a, err := anypb.New(m)
		if err == nil {
			dump.Configs = append(dump.Configs, a)
		}
	}
	clusters := &adminv3.ClustersConfigDump{VersionInfo: versions[resource.ClusterType]}
	for _, r := range applied[resource.ClusterType] {
		dc := &adminv3.ClustersConfigDump_DynamicCluster{VersionInfo: r.version, Cluster: redactAny(r.raw), LastUpdated: timestamppb.New(r.updated)}
		if snap.clusters[r.name] != nil {
			clusters.DynamicActiveClusters = append(clusters.DynamicActiveClusters, dc)
		} else {
			clusters.DynamicWarmingClusters = append(clusters.DynamicWarmingClusters, dc)
		}
	}
	add(clusters)

	endpoints := &adminv3.EndpointsConfigDump{}
	for _, r := range applied[resource.EndpointType] {
		endpoints.DynamicEndpointConfigs = append(endpoints.DynamicEndpointConfigs, &adminv3.EndpointsConfigDump_DynamicEndpointConfig{
			VersionInfo: r.version, EndpointConfig: redactAny(r.raw), LastUpdated: timestamppb.New(r.updated)})
	}
	add(endpoints)

	listeners := &adminv3.ListenersConfigDump{VersionInfo: versions[resource.ListenerType]}
	for _, r := range applied[resource.ListenerType] {
		st := &adminv3.ListenersConfigDump_DynamicListenerState{VersionInfo: r.version, Listener: redactAny(r.raw), LastUpdated: timestamppb.New(r.updated)}
		dl := &adminv3.ListenersConfigDump_DynamicListener{Name: r.name}
		if snap.listeners[r.name] != nil {
			dl.ActiveState = st
		} else {
			dl.WarmingState = st
		}
		listeners.DynamicListeners = append(listeners.DynamicListeners, dl)
	}
	add(listeners)

	routes := &adminv3.RoutesConfigDump{}
	for _, r := range applied[resource.RouteType] {
		routes.DynamicRouteConfigs = append(routes.DynamicRouteConfigs, &adminv3.RoutesConfigDump_DynamicRouteConfig{
			VersionInfo: r.version, RouteConfig: redactAny(r.raw), LastUpdated: timestamppb.New(r.updated)})
	}
	add(routes)

	secrets := &adminv3.SecretsConfigDump{}
	for _, r := range applied[resource.SecretType] {
		secrets.DynamicActiveSecrets = append(secrets.DynamicActiveSecrets, &adminv3.SecretsConfigDump_DynamicSecret{
			Name: r.name, VersionInfo: r.version, Secret: redactAny(r.raw), LastUpdated: timestamppb.New(r.updated)})
	}
	add(secrets)
	return dump
}

type namedResource struct {
	name string
	appliedResource
}

// redactAny is a copy of a with its secret values replaced: the private
// key and password of every TLS certificate, generic secrets, session
// ticket keys, wherever they sit (a listener's inline transport socket
// too). What it cannot decode it drops whole rather than show.
func redactAny(a *anypb.Any) *anypb.Any {
	m, err := a.UnmarshalNew()
	if err != nil {
		return &anypb.Any{TypeUrl: a.GetTypeUrl()}
	}
	redact(m.ProtoReflect())
	out, err := anypb.New(m)
	if err != nil {
		return &anypb.Any{TypeUrl: a.GetTypeUrl()}
	}
	return out
}

var redactedSource = &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: Redacted}}

func redact(m protoreflect.Message) {
	switch v := m.Interface().(type) {
	case *tlsv3.TlsCertificate:
		if v.PrivateKey != nil {
			v.PrivateKey = proto.Clone(redactedSource).(*core.DataSource)
		}
		if v.Password != nil {
			v.Password = proto.Clone(redactedSource).(*core.DataSource)
		}
	case *tlsv3.GenericSecret:
		if v.Secret != nil {
			v.Secret = proto.Clone(redactedSource).(*core.DataSource)
		}
	case *tlsv3.TlsSessionTicketKeys:
		for i := range v.Keys {
			v.Keys[i] = proto.Clone(redactedSource).(*core.DataSource)
		}
	case *anypb.Any:
		r := redactAny(v)
		v.Value = r.Value
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := val.List()
			for i := 0; i < l.Len(); i++ {
				redact(l.Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			val.Map().Range(func(_ protoreflect.MapKey, v protoreflect.Value) bool {
				redact(v.Message())
				return true
			})
		case fd.Message() != nil && !fd.IsList() && !fd.IsMap():
			redact(val.Message())
		}
		return true
	})
}
