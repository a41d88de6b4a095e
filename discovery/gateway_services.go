package discovery

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/go-memdb"
)

// What Consul derives from its gateway config entries, derived here at
// read time from the entries and the catalog (Consul keeps a table it
// updates on every write; reading it fresh gives the same answer without
// one): the services each gateway links (GatewayServices) and the ingress
// gateways that expose a service (IngressCheckServiceNodes).

// Consul's GatewayServiceKind: whether a terminating gateway's service is
// in the catalog.
const (
	GatewayServiceKindService = "service"
)

// ServiceName is Consul's ServiceName: a name, and in Enterprise its
// namespace and partition (always the default ones here).
type ServiceName struct {
	Name      string
	Namespace string `json:",omitempty"`
	Partition string `json:",omitempty"`
}

// GatewayService is Consul's GatewayService: one service a gateway links,
// with what the entry says about it.
type GatewayService struct {
	Gateway      ServiceName
	Service      ServiceName
	GatewayKind  string
	Port         int      `json:",omitempty"`
	Protocol     string   `json:",omitempty"`
	Hosts        []string `json:",omitempty"`
	CAFile       string   `json:",omitempty"`
	CertFile     string   `json:",omitempty"`
	KeyFile      string   `json:",omitempty"`
	SNI          string   `json:",omitempty"`
	FromWildcard bool     `json:",omitempty"`
	ServiceKind  string   `json:",omitempty"`
	// CreateIndex and ModifyIndex are the config entry's.
	CreateIndex uint64
	ModifyIndex uint64
}

// gatewayClash refuses a gateway entry whose name another gateway kind
// already has, as Consul does: a gateway service is one kind of gateway.
func gatewayClash(tx *memdb.Txn, kind, name string) error {
	other := ""
	switch kind {
	case KindIngressGateway:
		other = KindTerminatingGateway
	case KindTerminatingGateway:
		other = KindIngressGateway
	default:
		return nil
	}
	raw, err := tx.First(tableConfigEntries, "id", other, name)
	if err != nil {
		return err
	}
	if raw != nil {
		return fmt.Errorf("%w: Name: a %s config entry named %q exists; a gateway is of one kind", ErrInvalid, other, name)
	}
	return nil
}

// serviceFacts is what a gateway's wildcard asks of a service name.
type serviceFacts struct {
	name string
	// connect: the service has a Connect endpoint (ConnectServiceNodes),
	// which an ingress wildcard needs.
	connect bool
	// plain: it has an instance that is not Connect-native, which a
	// terminating wildcard needs.
	plain bool
}

// catalogServiceFacts reads, in one pass over the instances, every typical
// service's facts but the servers' own "consul" service, by lower-cased
// name.
func catalogServiceFacts(ws memdb.WatchSet, tx *memdb.Txn) (map[string]*serviceFacts, error) {
	nodes, err := collect[Node](ws, tx, tableNodes, "id")
	if err != nil {
		return nil, err
	}
	external := map[string]bool{}
	for _, n := range nodes {
		external[n.Name] = n.External
	}
	insts, err := collect[Instance](ws, tx, tableInstances, "id")
	if err != nil {
		return nil, err
	}
	out := map[string]*serviceFacts{}
	fact := func(name string) *serviceFacts {
		k := strings.ToLower(name)
		f := out[k]
		if f == nil {
			f = &serviceFacts{name: name}
			out[k] = f
		}
		return f
	}
	var proxied []string
	for _, in := range insts {
		switch {
		case in.Kind == KindConnectProxy && in.Proxy != nil:
			proxied = append(proxied, in.Proxy.DestinationServiceName)
		case in.Kind != KindTypical, in.Service == ServerServiceName:
		default:
			f := fact(in.Service)
			f.plain = f.plain || !in.ConnectNative
			// An agent's node proxy fronts every instance on it.
			f.connect = f.connect || in.ConnectNative || !external[in.Node]
		}
	}
	// A connect-proxy record makes its destination a Connect endpoint,
	// if the destination is in the catalog as a typical service.
	for _, d := range proxied {
		if f := out[strings.ToLower(d)]; f != nil {
			f.connect = true
		}
	}
	return out, nil
}

// GatewayServices lists the services the ingress-gateway or
// terminating-gateway entry named gateway links, as Consul's
// /v1/catalog/gateway-services/:gateway: each named service (whether or
// not it is in the catalog), then for a "*" every eligible typical service
// of the catalog the entry does not name on that port, FromWildcard set.
// Sorted by service name and port. Empty when there is no such entry.
func (s *Store) GatewayServices(ws memdb.WatchSet, gateway string) (uint64, []*GatewayService, error) {
	tx := s.readTxn(ws)
	idx := maxIndex(tx, tableConfigEntries, tableInstances, tableNodes)
	var entry *ConfigEntry
	for _, kind := range []string{KindIngressGateway, KindTerminatingGateway} {
		ch, raw, err := tx.FirstWatch(tableConfigEntries, "id", kind, gateway)
		if err != nil {
			return idx, nil, err
		}
		if ws != nil {
			ws.Add(ch)
		}
		if raw != nil {
			entry = raw.(*ConfigEntry)
		}
	}
	if entry == nil {
		return idx, nil, nil
	}
	facts, err := catalogServiceFacts(ws, tx)
	if err != nil {
		return idx, nil, err
	}
	return idx, gatewayServicesOf(entry, facts), nil
}

// gatewayServicesOf derives one entry's links.
func gatewayServicesOf(e *ConfigEntry, facts map[string]*serviceFacts) []*GatewayService {
	gw := ServiceName{Name: e.Name}
	base := func() GatewayService {
		return GatewayService{Gateway: gw, CreateIndex: e.CreateIndex, ModifyIndex: e.ModifyIndex}
	}
	type key struct {
		name string
		port int
	}
	var out, wild []*GatewayService
	named := map[key]bool{}
	add := func(g *GatewayService) {
		if g.Service.Name == wildcardService {
			wild = append(wild, g)
			return
		}
		named[key{strings.ToLower(g.Service.Name), g.Port}] = true
		out = append(out, g)
	}
	switch {
	case e.Ingress != nil:
		for _, l := range e.Ingress.Listeners {
			for _, svc := range l.Services {
				g := base()
				g.GatewayKind, g.Service, g.Port, g.Protocol, g.Hosts = KindIngressGateway, ServiceName{Name: svc.Name}, l.Port, l.Protocol, svc.Hosts
				add(&g)
			}
		}
	case e.Terminating != nil:
		for _, svc := range e.Terminating.Services {
			g := base()
			g.GatewayKind, g.Service = KindTerminatingGateway, ServiceName{Name: svc.Name}
			g.CAFile, g.CertFile, g.KeyFile, g.SNI = svc.CAFile, svc.CertFile, svc.KeyFile, svc.SNI
			if facts[strings.ToLower(svc.Name)] != nil {
				g.ServiceKind = GatewayServiceKindService
			}
			add(&g)
		}
	}
	for _, w := range wild {
		for _, f := range facts {
			eligible := f.plain
			if w.GatewayKind == KindIngressGateway {
				eligible = f.connect
			}
			if !eligible || named[key{strings.ToLower(f.name), w.Port}] {
				continue
			}
			g := *w
			g.Service, g.FromWildcard = ServiceName{Name: f.name}, true
			if w.GatewayKind == KindTerminatingGateway {
				g.ServiceKind = GatewayServiceKindService
			}
			out = append(out, &g)
		}
	}
	slices.SortFunc(out, func(a, b *GatewayService) int {
		return cmp.Or(cmp.Compare(strings.ToLower(a.Service.Name), strings.ToLower(b.Service.Name)), cmp.Compare(a.Port, b.Port))
	})
	return out
}

// IngressCheckServiceNodes is CheckServiceNodes for the ingress gateways
// that expose service (Consul's /v1/health/ingress/:service): the
// ingress-gateway instances named like every ingress-gateway entry that
// lists service, or that has a "*" on a listener and service has a
// Connect endpoint. tags and passingOnly apply to the gateway instances.
func (s *Store) IngressCheckServiceNodes(ws memdb.WatchSet, service string, tags []string, passingOnly bool) (uint64, []ServiceEntry, error) {
	var entriesIdx uint64
	idx, out, err := s.checkServiceNodes(ws, func(ws memdb.WatchSet, tx *memdb.Txn, service string, tags []string) ([]ServiceEntry, error) {
		entriesIdx = maxIndex(tx, tableConfigEntries)
		return ingressNodesTxn(ws, tx, service, tags)
	}, service, tags, passingOnly)
	return max(idx, entriesIdx), out, err
}

func ingressNodesTxn(ws memdb.WatchSet, tx *memdb.Txn, service string, tags []string) ([]ServiceEntry, error) {
	entries, err := collect[ConfigEntry](ws, tx, tableConfigEntries, "kind", KindIngressGateway)
	if err != nil {
		return nil, err
	}
	var facts map[string]*serviceFacts
	var out []ServiceEntry
	for _, e := range entries {
		if e.Ingress == nil {
			continue
		}
		exposes, wildcard := false, false
		for _, l := range e.Ingress.Listeners {
			for _, svc := range l.Services {
				exposes = exposes || strings.EqualFold(svc.Name, service)
				wildcard = wildcard || svc.Name == wildcardService
			}
		}
		if !exposes && wildcard {
			if facts == nil {
				if facts, err = catalogServiceFacts(ws, tx); err != nil {
					return nil, err
				}
			}
			f := facts[strings.ToLower(service)]
			exposes = f != nil && f.connect
		}
		if !exposes {
			continue
		}
		gws, err := serviceNodesTxn(ws, tx, e.Name, tags)
		if err != nil {
			return nil, err
		}
		for _, g := range gws {
			if g.Instance.Kind == KindIngressGateway {
				out = append(out, g)
			}
		}
	}
	return out, nil
}
