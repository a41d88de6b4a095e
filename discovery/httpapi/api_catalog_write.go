package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/vmesh/vmesh/discovery"
)

// PUT /v1/catalog/register and /v1/catalog/deregister: Consul's catalog
// writes, for external nodes (discovery/catalog_register.go says why) and
// for the node of the agent that received the request, which applies them
// as its own registrations (api_catalog_own.go). The ACL rule is Consul's:
// node:write on the node, service:write on the service
// (discovery.AuthorizeCommand).

// catalogRegistration is Consul's CatalogRegistration as consul/api sends
// it; fields vmesh has no use for (Partition, Locality) are ignored, as an
// agent without them would. A service's Kind, Proxy and Connect.Native
// are kept as an inert record (discovery/catalog_register.go).
type catalogRegistration struct {
	ID              string
	Node            string
	Address         string
	TaggedAddresses map[string]string
	NodeMeta        map[string]string
	Datacenter      string
	Service         *catalogRegService
	Check           *catalogRegCheck
	Checks          []*catalogRegCheck
	SkipNodeUpdate  bool
}

type catalogRegService struct {
	Kind              string
	ID                string
	Service           string
	Tags              []string
	Meta              map[string]string
	Port              int
	Address           string
	TaggedAddresses   map[string]discovery.ServiceAddress
	Weights           *wireWeights
	EnableTagOverride bool
	Proxy             *discovery.ConnectProxyConfig
	Connect           *catalogRegConnect
}

type catalogRegConnect struct {
	Native         bool
	SidecarService json.RawMessage
}

type catalogRegCheck struct {
	Node      string
	CheckID   string
	Name      string
	Status    string
	Notes     string
	Output    string
	ServiceID string
	Type      string
}

type catalogDeregistration struct {
	Node       string
	Datacenter string
	ServiceID  string
	CheckID    string
}

var nodeIDRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

func (a *API) catalogRegister(w http.ResponseWriter, r *http.Request) {
	var body catalogRegistration
	if err := newLenientDecoder(w, r).Decode(&body); err != nil {
		a.writeError(w, r, decodeError(err))
		return
	}
	req, err := a.buildCatalogRegister(&body)
	switch {
	case err != nil:
	case req.Node.Name == a.NodeName:
		err = a.ownNodeRegister(r, &body, req) // api_catalog_own.go
	default:
		err = a.applyCatalog(r, req.Node.Name, *req)
	}
	if err != nil {
		a.writeError(w, r, agentNodeStatus(err))
		return
	}
	writeJSON(w, true)
}

func (a *API) buildCatalogRegister(body *catalogRegistration) (*discovery.CatalogRegisterRequest, error) {
	if body.Datacenter != "" && body.Datacenter != a.Datacenter {
		return nil, &HTTPError{Code: http.StatusInternalServerError, Msg: "No path to datacenter"}
	}
	if body.Node == "" {
		return nil, badRequest("Invalid catalog registration: field Node: must provide node")
	}
	if !body.SkipNodeUpdate && body.Address == "" {
		return nil, badRequest("Invalid catalog registration: field Address: must provide address if SkipNodeUpdate is not set")
	}
	if body.ID != "" && !nodeIDRE.MatchString(body.ID) {
		return nil, badRequest("Invalid catalog registration: field ID: %q is not a UUID", body.ID)
	}
	for k := range body.NodeMeta {
		if strings.HasPrefix(k, "vmesh-") {
			return nil, badRequest("Invalid catalog registration: field NodeMeta: key %q: the vmesh- prefix is reserved for agents", k)
		}
	}
	req := &discovery.CatalogRegisterRequest{
		Node: discovery.Node{
			ID: strings.ToLower(body.ID), Name: body.Node, Address: body.Address, Datacenter: a.Datacenter,
			Meta: body.NodeMeta, TaggedAddresses: body.TaggedAddresses,
		},
		SkipNodeUpdate: body.SkipNodeUpdate,
	}
	if s := body.Service; s != nil {
		if s.Service == "" {
			return nil, badRequest("Invalid catalog registration: field Service.Service: must provide a service name")
		}
		if s.Port < 0 || s.Port > 65535 {
			return nil, badRequest("Invalid catalog registration: field Service.Port: %d is not a port", s.Port)
		}
		in := &discovery.Instance{
			Node: body.Node, ID: s.ID, Service: s.Service, Tags: s.Tags, Meta: s.Meta, Port: s.Port,
			Address: s.Address, TaggedAddresses: s.TaggedAddresses, EnableTagOverride: s.EnableTagOverride,
			Weights: discovery.Weights{Passing: 1, Warning: 1}, Source: "catalog",
		}
		if in.ID == "" {
			in.ID = s.Service
		}
		if err := catalogRegKind(s, in); err != nil {
			return nil, err
		}
		// consul/api sends zero weights when none were set: the default.
		if w := s.Weights; w != nil && (w.Passing != 0 || w.Warning != 0) {
			if w.Passing < 1 || w.Warning < 0 {
				return nil, badRequest("Invalid catalog registration: field Service.Weights: Passing must be at least 1 and Warning at least 0")
			}
			in.Weights = discovery.Weights{Passing: w.Passing, Warning: w.Warning}
		}
		req.Service = in
	}
	checks := body.Checks
	if body.Check != nil {
		checks = append([]*catalogRegCheck{body.Check}, checks...)
	}
	for i, c := range checks {
		if c == nil {
			continue
		}
		if c.Node != "" && c.Node != body.Node {
			return nil, badRequest("Invalid catalog registration: check %d: field Node: %q is not the registered node %q", i, c.Node, body.Node)
		}
		id := c.CheckID
		if id == "" {
			id = c.Name
		}
		if id == "" {
			return nil, badRequest("Invalid catalog registration: check %d: field CheckID: must provide a CheckID or Name", i)
		}
		status := c.Status
		if status == "" {
			status = discovery.HealthCritical
		}
		if !discovery.ValidHealthState(status) {
			return nil, badRequest("Invalid catalog registration: check %q: field Status: %q is not passing, warning or critical", id, c.Status)
		}
		name := c.Name
		if name == "" {
			name = id
		}
		req.Checks = append(req.Checks, &discovery.Check{
			Node: body.Node, CheckID: id, Name: name, Status: status, Notes: c.Notes, Output: c.Output,
			ServiceID: c.ServiceID, Type: c.Type,
		})
	}
	return req, nil
}

func (a *API) catalogDeregister(w http.ResponseWriter, r *http.Request) {
	var body catalogDeregistration
	if err := newLenientDecoder(w, r).Decode(&body); err != nil {
		a.writeError(w, r, decodeError(err))
		return
	}
	var err error
	switch {
	case body.Datacenter != "" && body.Datacenter != a.Datacenter:
		err = &HTTPError{Code: http.StatusInternalServerError, Msg: "No path to datacenter"}
	case body.Node == "":
		err = badRequest("Invalid catalog deregistration: field Node: must provide node")
	case body.Node == a.NodeName:
		err = a.ownNodeDeregister(r, discovery.CatalogDeregisterRequest{Node: body.Node, ServiceID: body.ServiceID, CheckID: body.CheckID})
	default:
		err = a.applyCatalog(r, body.Node, discovery.CatalogDeregisterRequest{Node: body.Node, ServiceID: body.ServiceID, CheckID: body.CheckID})
	}
	if err != nil {
		a.writeError(w, r, agentNodeStatus(err))
		return
	}
	writeJSON(w, true)
}

// applyCatalog authorizes cmd with the request's token, then refuses a
// write to an agent's node with a 403 before it is sent (the catalog
// refuses it again when it applies it: this store may be a moment
// behind), then applies it.
func (a *API) applyCatalog(r *http.Request, node string, cmd discovery.Command) error {
	if err := a.authorize(r, cmd); err != nil {
		return err
	}
	if _, n, _, err := a.Store.Node(nil, node); err != nil {
		return err
	} else if n != nil && !n.External {
		return fmt.Errorf("%w: node %q", discovery.ErrAgentNode, node)
	}
	_, err := a.Writer.Apply(discovery.WithToken(r.Context(), requestToken(r)), cmd)
	return err
}

func agentNodeStatus(err error) error {
	if errors.Is(err, discovery.ErrAgentNode) {
		return &HTTPError{Code: http.StatusForbidden, Err: err,
			Msg: "Permission denied: " + err.Error() + ": the catalog endpoints write external nodes and the receiving agent's own node; another agent's services and checks change through that agent"}
	}
	return err
}

// catalogRegKind checks a registered service's Kind, Proxy and Connect and
// keeps them on in: any of Consul's kinds is accepted as an inert record
// (a connect-proxy must name its destination and a port, as in Consul); a
// typical service may be Connect-native; a sidecar is an agent's, never a
// catalog registration's.
func catalogRegKind(s *catalogRegService, in *discovery.Instance) error {
	if s.Kind != "" && !slices.Contains(discovery.CatalogKinds, s.Kind) {
		return badRequest("Invalid catalog registration: field Service.Kind: %q is not one of %s, or empty for a typical service", s.Kind, strings.Join(discovery.CatalogKinds, ", "))
	}
	in.Kind = s.Kind
	if c := s.Connect; c != nil {
		if len(c.SidecarService) > 0 && string(c.SidecarService) != "null" {
			return badRequest("Invalid catalog registration: field Service.Connect.SidecarService: a sidecar is registered through an agent (/v1/agent/service/register), not the catalog")
		}
		if c.Native && s.Kind != "" {
			return badRequest("Invalid catalog registration: field Service.Connect.Native: a %s cannot also be Connect-native", s.Kind)
		}
		in.ConnectNative = c.Native
	}
	if discovery.KindNeedsPort(s.Kind) && s.Port == 0 {
		return badRequest("Invalid catalog registration: field Service.Port: must be set for a %s", s.Kind)
	}
	switch {
	case s.Kind == discovery.KindConnectProxy:
		if s.Proxy == nil || s.Proxy.DestinationServiceName == "" {
			return badRequest("Invalid catalog registration: field Service.Proxy.DestinationServiceName: must be set for a connect-proxy")
		}
		in.Proxy = s.Proxy
	case s.Kind == "" && s.Proxy != nil && (s.Proxy.DestinationServiceName != "" || s.Proxy.DestinationServiceID != "" || len(s.Proxy.Upstreams) > 0):
		return badRequest("Invalid catalog registration: field Service.Proxy: only a connect-proxy or a gateway has one; set Service.Kind")
	case s.Kind != "":
		in.Proxy = s.Proxy
	}
	return nil
}
