package discovery

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/hashicorp/go-memdb"
)

// A service registered with Connect.SidecarService gets, besides the node
// proxy's upstreams for it (Instance.Upstreams), a connect-proxy record
// that describes that node proxy as the service's sidecar, as Consul
// registers `<id>-sidecar-proxy` beside the service. vmesh runs no proxy
// per service: the record is a description, not a second proxy.
//
//   - ID is always `<service ID>-sidecar-proxy` (Consul's ID, which its
//     registration cannot change) and Name `<service name>-sidecar-proxy`
//     unless the SidecarService names one; Tags and Meta are the
//     SidecarService's, or else the service's (less Meta["vmesh-user"]:
//     the record has no identity of its own), as Consul's sidecar
//     defaults copy them; Weights and EnableTagOverride are the
//     SidecarService's.
//   - Address is empty (the node's address) and Port is MeshPort: the
//     node proxy's inbound listener binds the node's address at the mesh
//     port and takes the service's mTLS there by SNI. A SidecarService
//     that asks for another Port or any Address is refused: nothing
//     would listen there.
//   - Proxy names the service (DestinationServiceName, -ID) and where the
//     node proxy forwards it (LocalServiceAddress: the service's address
//     or 127.0.0.1, LocalServicePort: its port); Proxy.Upstreams are the
//     upstreams as registered, which the node proxy applies from the
//     service's own instance.
//   - Its health is the service's: the node proxy forwards nothing to a
//     critical instance, so the record has no checks of its own
//     and the health views count the service's (checkServiceNodes, the
//     agent's /v1/agent/health/service), as Consul's default sidecar
//     alias check does.
//   - A service without a port gets none: the node proxy accepts nothing
//     for it (only its upstreams are served), so there is no endpoint to
//     describe. Nor does a udp service: the mesh port is TCP.
//
// The record is written and removed with its service in one catalog
// transaction (RegisterService, DeleteService): a registration without
// SidecarService removes it. Being a connect-proxy record it is inert
// (Inert), so MeshState, VIPs, capture and leaf certificates never see it:
// the node proxy's listeners, routes and clusters come from the service's
// instance alone.

// MeshPort is where every agent's node proxy accepts mTLS from its peers,
// on its node's address (dataplane/xds DefaultMeshPort is this port).
const MeshPort = 15443

// SidecarSuffix ends the ID and default name of a sidecar record.
const SidecarSuffix = "-sidecar-proxy"

// buildSidecar returns the sidecar record of inst (built from reg) or nil,
// reporting what the SidecarService asks that the node proxy cannot be.
func buildSidecar(reg *ServiceRegistration, inst *Instance, bad func(field, format string, args ...any)) *Instance {
	if reg.Connect == nil || reg.Connect.SidecarService == nil || inst.Kind != KindTypical {
		return nil
	}
	sc := reg.Connect.SidecarService
	const p = "Connect.SidecarService."
	id := inst.ID + SidecarSuffix
	if sc.ID != "" && sc.ID != id {
		bad(p+"ID", "%q: a sidecar's ID is always the service's ID followed by %q (%q)", sc.ID, SidecarSuffix, id)
	}
	if sc.Kind != "" && sc.Kind != KindConnectProxy {
		bad(p+"Kind", "%q: a sidecar is a %s", sc.Kind, KindConnectProxy)
	}
	if sc.Port != 0 && sc.Port != MeshPort {
		bad(p+"Port", "%d: vmesh's node proxy takes this service's mTLS on the mesh port %d only; leave Port unset", sc.Port, MeshPort)
	}
	if sc.Address != "" {
		bad(p+"Address", "%q: vmesh's node proxy takes this service's mTLS on its node's address only; leave Address unset", sc.Address)
	}
	name := sc.Name
	if name == "" {
		name = inst.Service + SidecarSuffix
	}
	switch {
	case strings.ContainsAny(name, "/ \t\n"):
		bad(p+"Name", "%q may not contain '/' or white space", name)
	case name == ServerServiceName:
		bad(p+"Name", "%q is the name of the servers' own service; choose another", name)
	}
	if _, ok := sc.Meta[MetaUser]; ok {
		bad(p+"Meta."+MetaUser, "a sidecar record is not a mesh service: it has no per-user identity")
	}
	weights := Weights{Passing: 1, Warning: 1}
	if w := sc.Weights; w != nil {
		if w.Passing < 1 {
			bad(p+"Weights.Passing", "must be at least 1, got %d", w.Passing)
		}
		if w.Warning < 0 {
			bad(p+"Weights.Warning", "must not be negative, got %d", w.Warning)
		}
		weights = *w
	}
	if inst.Port < 1 || inst.Port > 65535 || inst.Protocol == ProtocolUDP {
		return nil
	}
	tags := slices.Clone(sc.Tags)
	if len(tags) == 0 {
		tags = slices.Clone(inst.Tags)
	}
	meta := maps.Clone(sc.Meta)
	if len(meta) == 0 {
		meta = maps.Clone(inst.Meta)
		delete(meta, MetaUser)
	}
	local := inst.Address
	if local == "" {
		local = "127.0.0.1"
	}
	proxy := &ConnectProxyConfig{
		DestinationServiceName: inst.Service, DestinationServiceID: inst.ID,
		LocalServiceAddress: local, LocalServicePort: inst.Port,
	}
	if sc.Proxy != nil {
		proxy.Upstreams = slices.Clone(sc.Proxy.Upstreams)
	}
	return &Instance{
		Node: inst.Node, ID: id, Service: name, Tags: tags, Port: MeshPort, Meta: meta,
		Weights: weights, EnableTagOverride: sc.EnableTagOverride, Source: inst.Source,
		Kind: KindConnectProxy, Proxy: proxy, SidecarFor: inst.ID,
	}
}

// RegisterService applies an agent's registration: the instance with its
// checks and, in the same transaction, its sidecar record (req.Sidecar),
// or the removal of the one it had. The sidecar is pinned to the
// instance's node, ID and service whatever the command says, so no
// registration writes a record on another node or for another service
// through it.
func (s *Store) RegisterService(idx uint64, req *RegisterServiceRequest) error {
	db, _ := s.current()
	tx := db.Txn(true)
	defer tx.Abort()
	at := s.logTime.Load()
	if err := ensureServiceTxn(tx, idx, at, &req.Instance, req.Checks); err != nil {
		return err
	}
	inst := &req.Instance
	if sc := req.Sidecar; sc != nil && inst.Kind == KindTypical {
		c := *sc
		c.Node, c.ID, c.SidecarFor, c.Kind = inst.Node, inst.ID+SidecarSuffix, inst.ID, KindConnectProxy
		proxy := ConnectProxyConfig{}
		if sc.Proxy != nil {
			proxy = *sc.Proxy
		}
		proxy.DestinationServiceName, proxy.DestinationServiceID = inst.Service, inst.ID
		c.Proxy = &proxy
		raw, err := tx.First(tableInstances, "id", c.Node, c.ID)
		if err != nil {
			return err
		}
		if raw != nil && raw.(*Instance).SidecarFor != inst.ID {
			return fmt.Errorf("%w: Connect.SidecarService: ID %q is already registered for service %q on node %q", ErrInvalid, c.ID, raw.(*Instance).Service, c.Node)
		}
		if err := ensureServiceTxn(tx, idx, at, &c, nil); err != nil {
			return err
		}
	} else if err := deleteSidecarTxn(tx, idx, at, inst.Node, inst.ID); err != nil {
		return err
	}
	if err := bumpIndex(tx, idx, tableInstances, tableChecks); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

// deleteSidecarTxn removes the sidecar record of the instance id on node,
// if it has one: at its one ID, <id>-sidecar-proxy (the store pins it).
func deleteSidecarTxn(tx *memdb.Txn, idx uint64, at int64, node, id string) error {
	raw, err := tx.First(tableInstances, "id", node, id+SidecarSuffix)
	if err != nil || raw == nil {
		return err
	}
	if in := raw.(*Instance); in.SidecarFor == id {
		return deleteServiceTxn(tx, idx, at, in)
	}
	return nil
}
