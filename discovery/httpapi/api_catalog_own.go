package httpapi

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/vmesh/vmesh/discovery"
)

// A catalog write that names the node of the agent that received it is
// that agent's own registration: the agent owns its node, so it applies
// the write to its own state with the commands its /v1/agent/ endpoints
// use (a registration of the service with its checks, a check, a
// deregistration), which it forwards with its own node certificate like
// every local registration, and which the leader accepts from this node
// only. A catalog write naming another agent's node stays refused
// (ErrAgentNode): no agent writes another's node.
//
//   - ACL: Consul's catalog rule (discovery.AuthorizeCommand on the
//     catalog command: node:write unless SkipNodeUpdate, service:write on
//     the service and on a connect-proxy's destination, each check's
//     rule), then the agent command's own rule when it is applied.
//   - The service goes through the agent's registration checks
//     (ServiceRegistration.Build: kinds, Meta, user ports), so it is
//     exactly what /v1/agent/service/register would have made, and shows
//     in /v1/agent/services.
//   - Checks are Consul's catalog checks: a status and no definition, so
//     the check runner leaves them alone and they keep the status given
//     until a catalog write changes it. The service's checks the request
//     does not name are kept (a catalog write adds, it does not replace),
//     each with its current status.
//   - Node fields come from the agent's own configuration: with
//     SkipNodeUpdate unset, each one the request gives (Address, ID,
//     TaggedAddresses, NodeMeta) must equal the agent's own, or the
//     request is refused with a 400 naming the field.
//   - A service registration and each further check are separate raft
//     entries (the agent's commands are per service and per check): all
//     are checked first, so a failure half way is an error from raft.

// ownNodeRegister applies a catalog registration of this agent's node.
func (a *API) ownNodeRegister(r *http.Request, body *catalogRegistration, req *discovery.CatalogRegisterRequest) error {
	if err := a.authorize(r, *req); err != nil {
		return err
	}
	if !req.SkipNodeUpdate {
		if err := a.ownNodeFields(body); err != nil {
			return err
		}
	}
	var svc *discovery.RegisterServiceRequest
	if req.Service != nil {
		var err error
		if svc, err = a.ownServiceRequest(body.Service, req.Service); err != nil {
			return err
		}
	}
	var others []*discovery.Check
	for _, c := range req.Checks {
		if c.CheckID == discovery.NodeLivenessCheckID {
			return badRequest("Invalid catalog registration: check %q: field CheckID: %q is the cluster's liveness check of the node; its leader writes it", c.CheckID, c.CheckID)
		}
		c.Node = a.NodeName
		if svc != nil && c.ServiceID == svc.Instance.ID {
			svc.Checks = append(svc.Checks, c)
			continue
		}
		if c.ServiceID != "" {
			if _, in, err := a.Store.Instance(nil, a.NodeName, c.ServiceID); err != nil {
				return err
			} else if in == nil || in.IsServerService() {
				return badRequest("Invalid catalog registration: check %q: field ServiceID: %q is not registered on node %q", c.CheckID, c.ServiceID, a.NodeName)
			}
		}
		others = append(others, c)
	}
	if svc != nil {
		if err := a.keepServiceChecks(svc); err != nil {
			return err
		}
		if err := a.registerService(r, svc); err != nil {
			return err
		}
	}
	for _, c := range others {
		if _, err := a.apply(r, discovery.RegisterCheckRequest{Check: *c}); err != nil {
			return err
		}
	}
	a.checksWritten()
	return nil
}

// ownNodeFields refuses node fields that differ from the agent's own:
// they come from its configuration, and a catalog write does not change
// them. A field the request leaves empty is not compared.
func (a *API) ownNodeFields(body *catalogRegistration) error {
	_, n, _, err := a.Store.Node(nil, a.NodeName)
	if err != nil {
		return err
	}
	if n == nil {
		return &HTTPError{Code: http.StatusServiceUnavailable, Msg: "agent not ready: this node is not registered yet"}
	}
	bad := func(field, have string) error {
		return badRequest("Invalid catalog registration: field %s: node %q is run by this agent, whose %s is %s; set SkipNodeUpdate, or send the agent's own value (its node fields come from its configuration)", field, a.NodeName, field, have)
	}
	if body.Address != n.Address {
		return bad("Address", n.Address)
	}
	if body.ID != "" && !strings.EqualFold(body.ID, n.ID) {
		return bad("ID", n.ID)
	}
	tagged := nodeTaggedAddresses(n)
	for _, k := range slices.Sorted(maps.Keys(body.TaggedAddresses)) {
		if v, ok := tagged[k]; !ok || v != body.TaggedAddresses[k] {
			return bad("TaggedAddresses."+k, quoteOrNone(v, ok))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(body.NodeMeta)) {
		if v, ok := n.Meta[k]; !ok || v != body.NodeMeta[k] {
			return bad("NodeMeta."+k, quoteOrNone(v, ok))
		}
	}
	return nil
}

func quoteOrNone(v string, ok bool) string {
	if !ok {
		return "not set"
	}
	return `"` + v + `"`
}

// ownServiceRequest is the agent registration a catalog service on this
// node amounts to: the same fields through the agent's own checks, so
// what it stores is what /v1/agent/service/register would store.
func (a *API) ownServiceRequest(s *catalogRegService, in *discovery.Instance) (*discovery.RegisterServiceRequest, error) {
	reg := discovery.ServiceRegistration{
		Kind: in.Kind, ID: in.ID, Name: in.Service, Tags: in.Tags, Port: in.Port, Address: in.Address,
		TaggedAddresses: in.TaggedAddresses, EnableTagOverride: in.EnableTagOverride, Meta: in.Meta,
		Proxy: s.Proxy,
	}
	if in.Weights != (discovery.Weights{Passing: 1, Warning: 1}) {
		w := in.Weights
		reg.Weights = &w
	}
	if in.ConnectNative {
		reg.Connect = &discovery.ServiceConnect{Native: true}
	}
	req, err := reg.Build(a.NodeName, "api")
	if err != nil {
		return nil, fmt.Errorf("Invalid catalog registration: field Service, as this agent's own service: %w", err)
	}
	return req, nil
}

// keepServiceChecks adds to svc the checks its instance already has that
// svc does not name, with no status, so that the catalog keeps each as it
// is (ensureCheckTxn keeps a check's status when none is given): a
// catalog registration adds checks, it does not drop the others.
func (a *API) keepServiceChecks(svc *discovery.RegisterServiceRequest) error {
	_, checks, err := a.Store.NodeChecks(nil, a.NodeName)
	if err != nil {
		return err
	}
	named := map[string]bool{}
	for _, c := range svc.Checks {
		named[c.CheckID] = true
	}
	for _, c := range checks {
		if c.ServiceID != svc.Instance.ID || named[c.CheckID] || c.CheckID == discovery.ServiceMaintenanceCheckID(svc.Instance.ID) {
			continue
		}
		k := *c
		k.Status, k.Output = "", ""
		svc.Checks = append(svc.Checks, &k)
	}
	return nil
}

// ownNodeDeregister applies a catalog deregistration of this agent's
// node through the agent's own deregistrations. The node itself is not
// removed this way: an agent's node leaves with the agent (vmesh leave,
// or force-leave).
func (a *API) ownNodeDeregister(r *http.Request, req discovery.CatalogDeregisterRequest) error {
	if req.ServiceID == "" && req.CheckID == "" {
		return &HTTPError{Code: http.StatusForbidden,
			Msg: fmt.Sprintf("Permission denied: node %q is run by this agent: its node leaves the catalog when the agent leaves (vmesh leave, or PUT /v1/agent/force-leave); deregister its services and checks by ServiceID or CheckID", req.Node)}
	}
	if err := a.authorize(r, req); err != nil {
		return err
	}
	if req.CheckID == discovery.NodeLivenessCheckID {
		return badRequest("Invalid catalog deregistration: field CheckID: %q is the cluster's liveness check of the node; its leader writes it", req.CheckID)
	}
	if req.ServiceID != "" {
		if _, in, err := a.Store.Instance(nil, a.NodeName, req.ServiceID); err != nil {
			return err
		} else if in != nil && in.IsServerService() {
			return badRequest("Invalid catalog deregistration: field ServiceID: %q is this server's own %s service; it goes when the server leaves", req.ServiceID, discovery.ServerServiceName)
		}
		if _, err := a.apply(r, discovery.DeregisterServiceRequest{Node: a.NodeName, ServiceID: req.ServiceID}); err != nil {
			return err
		}
	}
	if req.CheckID != "" {
		if _, err := a.apply(r, discovery.DeregisterCheckRequest{Node: a.NodeName, CheckID: req.CheckID}); err != nil {
			return err
		}
	}
	return nil
}
