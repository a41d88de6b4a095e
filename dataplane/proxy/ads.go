package proxy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// The ADS client: one SotW stream carries every type. Listeners and
// clusters are wildcard subscriptions; endpoints, secrets and route
// configurations are asked for by the names the accepted clusters and
// listeners reference. Each
// response is parsed, resolved together with everything else accepted so
// far and, only if all of that succeeds (binding new listeners included),
// swapped in and ACKed; otherwise it is NACKed with the error naming the
// resource and field, and the previous config keeps serving.

// typeOrder is the order of the initial subscriptions.
var typeOrder = []string{resource.ListenerType, resource.ClusterType, resource.EndpointType, resource.SecretType, resource.RouteType}

// typeState is the client's side of one type on the stream.
type typeState struct {
	version string // last ACKed
	nonce   string // of the last response
	names   []string
	asked   bool // a request has been sent on this stream
}

// TypeStatus is what the proxy made of one resource type.
type TypeStatus struct {
	Acked    string
	Nacks    int
	LastNack string
}

// runADS keeps a stream to the server open until ctx ends, reconnecting
// with exponential backoff (1 s doubling to 30 s, with jitter; reset after
// a stream that lived a minute).
func (p *Proxy) runADS(ctx context.Context) {
	backoff := p.cfg.MinBackoff
	for {
		start := time.Now()
		err := p.stream(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > time.Minute {
			backoff = p.cfg.MinBackoff
		}
		wait := backoff/2 + time.Duration(randInt63n(int64(backoff/2)+1))
		p.log.Warn("xDS stream ended; reconnecting", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(backoff*2, p.cfg.MaxBackoff)
	}
}

func (p *Proxy) stream(ctx context.Context) error {
	conn, err := grpc.NewClient(p.cfg.XDSAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dialing xDS: %w", err)
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx)
	if err != nil {
		return fmt.Errorf("opening the ADS stream: %w", err)
	}
	p.streams.Add(1)
	p.mu.Lock()
	for _, ts := range p.types {
		ts.nonce, ts.asked = "", false
	}
	p.mu.Unlock()
	// Sends come from this goroutine and from delayed NACKs.
	var sendMu sync.Mutex
	send := func(req *discoverygrpc.DiscoveryRequest) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		req.Node = p.node
		return st.Send(req)
	}
	var delayed sync.WaitGroup
	defer delayed.Wait()
	defer cancel()
	nacks := map[string]*nackRepeat{}
	for _, typ := range []string{resource.ListenerType, resource.ClusterType} {
		p.mu.Lock()
		req := p.request(typ)
		p.mu.Unlock()
		if err := send(req); err != nil {
			return err
		}
	}
	if err := p.sendSubscriptions(send); err != nil {
		return err
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		req := p.handle(resp)
		if d := nackDelay(nacks, req, resp); d > 0 {
			// The same response rejected again: a server that resends
			// on every NACK (go-control-plane's snapshot cache does)
			// would otherwise spin with us.
			delayed.Add(1)
			go func() {
				defer delayed.Done()
				select {
				case <-sctx.Done():
				case <-time.After(d):
					send(req) // a broken stream shows on Recv
				}
			}()
		} else if err := send(req); err != nil {
			return err
		}
		if err := p.sendSubscriptions(send); err != nil {
			return err
		}
	}
}

// nackRepeat tracks how often one type's same response was rejected.
type nackRepeat struct {
	key   string
	delay time.Duration
}

// nackDelay is how long to hold a NACK back: nothing the first time a
// response is rejected, then from 100 ms doubling to 5 s while the server
// sends the same version with the same error again.
func nackDelay(nacks map[string]*nackRepeat, req *discoverygrpc.DiscoveryRequest, resp *discoverygrpc.DiscoveryResponse) time.Duration {
	if req.GetErrorDetail() == nil {
		delete(nacks, req.GetTypeUrl())
		return 0
	}
	key := resp.GetVersionInfo() + "\x00" + req.GetErrorDetail().GetMessage()
	n := nacks[req.GetTypeUrl()]
	if n == nil || n.key != key {
		nacks[req.GetTypeUrl()] = &nackRepeat{key: key}
		return 0
	}
	n.delay = min(max(2*n.delay, 100*time.Millisecond), 5*time.Second)
	return n.delay
}

// request is a (re)subscription of typ at its ACKed version (p.mu held).
func (p *Proxy) request(typ string) *discoverygrpc.DiscoveryRequest {
	ts := p.types[typ]
	ts.asked = true
	return &discoverygrpc.DiscoveryRequest{TypeUrl: typ, VersionInfo: ts.version, ResponseNonce: ts.nonce, ResourceNames: ts.names}
}

// sendSubscriptions asks for the endpoints, secrets and route
// configurations the accepted config references, when that set changed.
func (p *Proxy) sendSubscriptions(send func(*discoverygrpc.DiscoveryRequest) error) error {
	p.mu.Lock()
	eds, sds, rds := referenced(p.st)
	var reqs []*discoverygrpc.DiscoveryRequest
	for typ, names := range map[string][]string{resource.EndpointType: eds, resource.SecretType: sds, resource.RouteType: rds} {
		ts := p.types[typ]
		if len(names) == 0 && !ts.asked {
			continue
		}
		if ts.asked && slices.Equal(ts.names, names) {
			continue
		}
		ts.names = names
		reqs = append(reqs, p.request(typ))
	}
	p.mu.Unlock()
	sort.Slice(reqs, func(i, j int) bool { return reqs[i].TypeUrl < reqs[j].TypeUrl })
	for _, r := range reqs {
		if err := send(r); err != nil {
			return err
		}
	}
	return nil
}

// referenced lists the EDS names of the accepted clusters, the secrets
// of the accepted clusters and listeners, and the RDS names of the
// accepted listeners, sorted.
func referenced(st *state) (eds, sds, rds []string) {
	e, s, r := map[string]bool{}, map[string]bool{}, map[string]bool{}
	addTLS := func(cert, roots string) {
		if cert != "" {
			s[cert] = true
		}
		if roots != "" {
			s[roots] = true
		}
	}
	for _, c := range st.clusters {
		if c.kind == kindEDS {
			e[c.edsName] = true
		}
		if c.tls != nil {
			addTLS(c.tls.certSecret, c.tls.rootsSecret)
		}
		for _, m := range c.tlsMatches {
			if m.tls != nil {
				addTLS(m.tls.certSecret, m.tls.rootsSecret)
			}
		}
	}
	for _, l := range st.listeners {
		for _, c := range append(slices.Clone(l.chains), l.def) {
			if c != nil && c.tls != nil {
				addTLS(c.tls.certSecret, c.tls.rootsSecret)
			}
			if c != nil && c.http != nil && c.http.rds != "" {
				r[c.http.rds] = true
			}
		}
	}
	for k := range e {
		eds = append(eds, k)
	}
	for k := range s {
		sds = append(sds, k)
	}
	for k := range r {
		rds = append(rds, k)
	}
	sort.Strings(eds)
	sort.Strings(sds)
	sort.Strings(rds)
	return eds, sds, rds
}

// handle takes one response and returns its ACK or NACK.
func (p *Proxy) handle(resp *discoverygrpc.DiscoveryResponse) *discoverygrpc.DiscoveryRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	typ := resp.GetTypeUrl()
	ts := p.types[typ]
	if ts == nil {
		return &discoverygrpc.DiscoveryRequest{TypeUrl: typ, ResponseNonce: resp.GetNonce(),
			ErrorDetail: &status.Status{Code: int32(codes.Unimplemented), Message: fmt.Sprintf("%v: resource type %s", ErrUnsupported, typ)}}
	}
	ts.nonce = resp.GetNonce()
	err := p.accept(typ, resp)
	if err != nil {
		p.cfg.Metrics.XDSNack(typ)
		p.status[typ].Nacks++
		p.status[typ].LastNack = err.Error()
		p.log.Warn("rejecting resources of an xDS update; they keep their previous version, the rest is applied", "type", typ, "version", resp.GetVersionInfo(), "err", err)
		req := p.request(typ)
		req.ErrorDetail = &status.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
		return req
	}
	ts.version = resp.GetVersionInfo()
	p.cfg.Metrics.XDSUpdate(typ)
	p.status[typ].Acked = ts.version
	p.log.Debug("xDS update applied", "type", typ, "version", ts.version, "resources", len(resp.GetResources()))
	return p.request(typ)
}

// accept parses a response, resolves it with the rest of the accepted
// config and swaps the result in (p.mu held). As Envoy does, one bad
// resource does not hold back the others: each resource is parsed on its
// own, a refused one keeps its previously accepted version (or stays
// absent), the rest are applied, and the refusals come back as the
// error that NACKs the response. Only a failure to apply the result as a
// whole (a listener that cannot bind) changes nothing.
func (p *Proxy) accept(typ string, resp *discoverygrpc.DiscoveryResponse) error {
	next := p.st.clone()
	var errs []error
	var raw map[string]*anypb.Any
	res := resp.GetResources()
	switch typ {
	case resource.ListenerType:
		next.listeners, raw, errs = acceptEach(res, "a listener", p.st.listeners,
			func(l *listener.Listener) string { return l.GetName() },
			func(l *listener.Listener) (*listenerSpec, error) {
				s, err := parseListener(l)
				if err == nil {
					p.confineLogs(s)
				}
				return s, err
			})
	case resource.ClusterType:
		next.clusters, raw, errs = acceptEach(res, "a cluster", p.st.clusters,
			func(c *cluster.Cluster) string { return c.GetName() }, parseCluster)
	case resource.EndpointType:
		next.endpoints, raw, errs = acceptEach(res, "endpoints", p.st.endpoints,
			func(c *endpoint.ClusterLoadAssignment) string { return c.GetClusterName() },
			func(c *endpoint.ClusterLoadAssignment) (*endpointsSpec, error) {
				return parseCLA(c, "endpoints "+c.GetClusterName())
			})
	case resource.SecretType:
		next.secrets, raw, errs = acceptEach(res, "a secret", p.st.secrets,
			func(s *tlsv3.Secret) string { return s.GetName() }, parseSecret)
	case resource.RouteType:
		next.routes, raw, errs = acceptEach(res, "a route configuration", p.st.routes,
			func(r *route.RouteConfiguration) string { return r.GetName() },
			func(r *route.RouteConfiguration) (*routeConfigSpec, error) {
				return parseRouteConfig(r, "route_configuration "+r.GetName())
			})
	}
	old := p.cur.Load()
	snap := build(next, old)
	if err := p.apply(snap); err != nil {
		return errors.Join(append(errs, err)...)
	}
	p.st = next
	p.retire(old, snap)
	p.recordApplied(typ, raw, resp.GetVersionInfo())
	return errors.Join(errs...)
}

// acceptEach parses the resources of one SotW response into the type's
// new map: every resource by itself; one that cannot be decoded, is named
// twice or is refused keeps prev's spec of its name, if any. raw has a key
// for each name of the new map: the resource as received when it was
// accepted, nil when it kept its previous version (for /config_dump).
func acceptEach[M interface {
	*T
	proto.Message
}, T any, S any](res []*anypb.Any, what string, prev map[string]S, name func(M) string, parse func(M) (S, error)) (map[string]S, map[string]*anypb.Any, []error) {
	out := make(map[string]S, len(res))
	raw := make(map[string]*anypb.Any, len(res))
	seen := map[string]bool{}
	var errs []error
	for _, a := range res {
		m := M(new(T))
		if err := a.UnmarshalTo(m); err != nil {
			errs = append(errs, fmt.Errorf("%w: decoding %s: %v", ErrInvalid, what, err))
			continue
		}
		n := name(m)
		if seen[n] {
			errs = append(errs, fmt.Errorf("%w: %s named twice in one response", ErrInvalid, n))
			continue
		}
		seen[n] = true
		s, err := parse(m)
		if err != nil {
			errs = append(errs, err)
			if old, ok := prev[n]; ok {
				out[n] = old
				raw[n] = nil
			}
			continue
		}
		out[n] = s
		raw[n] = a
	}
	return out, raw, errs
}

func newTypes() map[string]*typeState {
	m := map[string]*typeState{}
	for _, t := range typeOrder {
		m[t] = &typeState{}
	}
	return m
}

func newStatus() map[string]*TypeStatus {
	m := map[string]*TypeStatus{}
	for _, t := range typeOrder {
		m[t] = &TypeStatus{}
	}
	return m
}

func newNode(id string) *core.Node {
	return &core.Node{Id: id, UserAgentName: "vmesh-proxy"}
}
