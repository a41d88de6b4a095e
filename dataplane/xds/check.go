package xds

import (
	"errors"
	"fmt"
	"sort"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	udp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/udp/udp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// refs collects what a snapshot's resources point at.
type refs struct {
	routes, endpoints, clusters map[string][]string // name -> who refers to it
}

func (r *refs) add(m map[string][]string, name, from string) { m[name] = append(m[name], from) }

// Check verifies a snapshot: every resource passes its ValidateAll, the
// EDS and RDS resources are exactly those that clusters, filter chains and
// api_listeners refer to, and every cluster a route, TCP or UDP proxy names
// exists. It is stricter than Snapshot.Consistent, which does not look into
// api_listeners (so a proxyless-only snapshot would fail it) nor at cluster
// names. The error wraps ErrInconsistent.
func Check(s *cache.Snapshot) error {
	var errs []error
	r := &refs{routes: map[string][]string{}, endpoints: map[string][]string{}, clusters: map[string][]string{}}
	have := map[resource.Type]map[string]bool{}
	for _, typ := range []resource.Type{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType, resource.SecretType} {
		have[typ] = map[string]bool{}
		all := s.GetResources(typ) // a copy: take it once
		names := make([]string, 0, len(all))
		for name := range all {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			res := all[name]
			have[typ][name] = true
			if v, ok := res.(interface{ ValidateAll() error }); ok {
				if err := v.ValidateAll(); err != nil {
					errs = append(errs, fmt.Errorf("%s %q: %w", shortType(typ), name, err))
				}
			}
			var err error
			switch m := res.(type) {
			case *cluster.Cluster:
				err = r.cluster(m)
			case *listener.Listener:
				err = r.listener(m)
			case *route.RouteConfiguration:
				r.routeConfig(m, "route "+m.GetName())
			case *endpoint.ClusterLoadAssignment:
				if m.GetClusterName() != name {
					errs = append(errs, fmt.Errorf("endpoints %q: cluster_name is %q", name, m.GetClusterName()))
				}
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s %q: %w", shortType(typ), name, err))
			}
		}
	}
	for _, c := range []struct {
		typ   resource.Type
		refs  map[string][]string
		exact bool // every resource of the type must be referred to
	}{
		{resource.RouteType, r.routes, true},
		{resource.EndpointType, r.endpoints, true},
		{resource.ClusterType, r.clusters, false},
	} {
		for _, name := range sortedKeys(c.refs) {
			if !have[c.typ][name] {
				errs = append(errs, fmt.Errorf("%s %q is referred to by %v but missing", shortType(c.typ), name, c.refs[name]))
			}
		}
		if c.exact {
			for name := range have[c.typ] {
				if _, ok := c.refs[name]; !ok {
					errs = append(errs, fmt.Errorf("%s %q is not referred to by anything", shortType(c.typ), name))
				}
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInconsistent, errors.Join(errs...))
	}
	return nil
}

func sortedKeys(m map[string][]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func shortType(t resource.Type) string {
	switch t {
	case resource.ClusterType:
		return "cluster"
	case resource.EndpointType:
		return "endpoints"
	case resource.ListenerType:
		return "listener"
	case resource.RouteType:
		return "route"
	case resource.SecretType:
		return "secret"
	}
	return t
}

func (r *refs) cluster(c *cluster.Cluster) error {
	if c.GetType() == cluster.Cluster_EDS {
		name := c.GetName()
		if sn := c.GetEdsClusterConfig().GetServiceName(); sn != "" {
			name = sn
		}
		r.add(r.endpoints, name, "cluster "+c.GetName())
	}
	return nil
}

func unpack(a *anypb.Any) (proto.Message, error) {
	if a == nil {
		return nil, errors.New("missing typed_config")
	}
	return a.UnmarshalNew()
}

func (r *refs) listener(l *listener.Listener) error {
	from := "listener " + l.GetName()
	if api := l.GetApiListener(); api != nil {
		m, err := unpack(api.GetApiListener())
		if err != nil {
			return fmt.Errorf("api_listener: %w", err)
		}
		h, ok := m.(*hcm.HttpConnectionManager)
		if !ok {
			return fmt.Errorf("api_listener holds %T, want an HttpConnectionManager", m)
		}
		r.hcm(h, from)
	}
	chains := append([]*listener.FilterChain(nil), l.GetFilterChains()...)
	if d := l.GetDefaultFilterChain(); d != nil {
		chains = append(chains, d)
	}
	for _, fc := range chains {
		for _, f := range fc.GetFilters() {
			m, err := unpack(f.GetTypedConfig())
			if err != nil {
				return fmt.Errorf("filter %s: %w", f.GetName(), err)
			}
			switch m := m.(type) {
			case *hcm.HttpConnectionManager:
				r.hcm(m, from)
			case *tcp.TcpProxy:
				r.tcpProxy(m, from)
			}
		}
	}
	for _, lf := range l.GetListenerFilters() {
		m, err := unpack(lf.GetTypedConfig())
		if err != nil {
			return fmt.Errorf("listener filter %s: %w", lf.GetName(), err)
		}
		if u, ok := m.(*udp.UdpProxyConfig); ok {
			if err := r.udpProxy(u, from); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *refs) hcm(h *hcm.HttpConnectionManager, from string) {
	if name := h.GetRds().GetRouteConfigName(); name != "" {
		r.add(r.routes, name, from)
	}
	if rc := h.GetRouteConfig(); rc != nil {
		r.routeConfig(rc, from)
	}
}

func (r *refs) tcpProxy(p *tcp.TcpProxy, from string) {
	if c := p.GetCluster(); c != "" {
		r.add(r.clusters, c, from)
	}
	for _, w := range p.GetWeightedClusters().GetClusters() {
		r.add(r.clusters, w.GetName(), from)
	}
}

func (r *refs) udpProxy(u *udp.UdpProxyConfig, from string) error {
	// Only the matcher form: the cluster field is deprecated and Build
	// never emits it.
	if a := u.GetMatcher().GetOnNoMatch().GetAction(); a != nil {
		m, err := unpack(a.GetTypedConfig())
		if err != nil {
			return fmt.Errorf("udp_proxy route: %w", err)
		}
		if rt, ok := m.(*udp.Route); ok {
			r.add(r.clusters, rt.GetCluster(), from)
		}
	}
	return nil
}

func (r *refs) routeConfig(rc *route.RouteConfiguration, from string) {
	for _, vh := range rc.GetVirtualHosts() {
		for _, rt := range vh.GetRoutes() {
			a := rt.GetRoute()
			if c := a.GetCluster(); c != "" {
				r.add(r.clusters, c, from)
			}
			for _, w := range a.GetWeightedClusters().GetClusters() {
				r.add(r.clusters, w.GetName(), from)
			}
		}
	}
}
