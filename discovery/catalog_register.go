package discovery

import (
	"fmt"

	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/acl"
)

// Consul's /v1/catalog/register and /v1/catalog/deregister write nodes
// that no agent runs: a database, a SaaS endpoint, a host that only
// consul-esm watches. In vmesh an agent owns its node, its services and
// its checks (it registers and re-registers them), so the catalog
// commands here write only external nodes:
//
//   - a registration creates the node External, or updates one that
//     already is; it never touches a node an agent registered (the
//     catalog refuses: ErrAgentNode), so no token, whatever its rules,
//     changes or hijacks a running agent's node or services this way;
//   - a deregistration removes an external node, or a service or check
//     of one, and nothing of an agent's node;
//   - the leader's liveness check (raft) leaves external nodes alone: no
//     agent heartbeats for them, and nothing reaps them.
//
// The whole registration is one raft entry and one catalog transaction:
// node, service and checks land together or not at all.
//
// A catalog write that names the node of the agent receiving it is not
// one of these commands: that agent applies it as its own registration
// (RegisterService, RegisterCheck, the deregistrations: what its
// /v1/agent/ endpoints send, which the leader takes only from the node's
// own certificate), after Consul's catalog ACL rule
// (discovery/httpapi/api_catalog_own.go). Its node fields stay the
// agent's configuration; its checks are status-only (no definition, so
// no runner changes them). Another agent's node stays refused: no agent
// writes another's node.
//
// Consul's other service kinds (a connect-proxy that is not vmesh's, a
// gateway) and Connect-native services may be registered this way too,
// on external nodes (on the agent's own node, the kinds an agent's
// registration takes: recordKinds). vmesh's node proxy fronts every mesh service,
// so such a record is a catalog entry and nothing more: it is served by
// the catalog, health, Connect and usage endpoints as registered (a
// connect-proxy record is one of its destination's Connect endpoints),
// and it is left out of the mesh's state (MeshState), of VIP allocation
// (ServiceNames) and so of every listener, route, cluster and capture
// rule; it gets no leaf certificate (only an agent's services do).

// Consul's service kinds a catalog registration may carry.
// CatalogKinds lists the kinds other than typical ("") that a catalog
// registration may carry (an agent's: recordKinds, kinds.go).
var CatalogKinds = []string{KindConnectProxy, KindMeshGateway, KindTerminatingGateway, KindIngressGateway, KindAPIGateway}

// Inert says whether in is a catalog record of a kind vmesh does not run
// (a connect-proxy or gateway that is not vmesh's): listed, never meshed.
func (in *Instance) Inert() bool { return in.Kind != KindTypical }

// Catalog command types.
const (
	CatalogRegisterType   MessageType = 20
	CatalogDeregisterType MessageType = 21
)

// ErrAgentNode refuses a catalog write to a node that an agent runs.
var ErrAgentNode = fmt.Errorf("%w: the node is run by a vmesh agent", ErrInvalid)

// CatalogRegisterRequest is Consul's CatalogRegistration, decoded.
type CatalogRegisterRequest struct {
	// Node is the node as registered (Name, ID, Address, TaggedAddresses,
	// Meta); the catalog marks it External.
	Node Node
	// SkipNodeUpdate keeps an existing node as it is.
	SkipNodeUpdate bool
	// Service, when set, is created or replaced on the node.
	Service *Instance
	// Checks are created or replaced on the node (ServiceID names the
	// request's service or one already on the node).
	Checks []*Check
}

// CatalogDeregisterRequest removes an external node (neither ServiceID
// nor CheckID), or a service and/or a check of one.
type CatalogDeregisterRequest struct {
	Node      string
	ServiceID string
	CheckID   string
}

func (CatalogRegisterRequest) MessageType() MessageType   { return CatalogRegisterType }
func (CatalogDeregisterRequest) MessageType() MessageType { return CatalogDeregisterType }

// agentNodeTxn refuses a node that exists and is not External.
func agentNodeTxn(tx *memdb.Txn, name string) (*Node, error) {
	raw, err := tx.First(tableNodes, "id", name)
	if err != nil || raw == nil {
		return nil, err
	}
	n := raw.(*Node)
	if !n.External {
		return n, fmt.Errorf("%w: node %q", ErrAgentNode, name)
	}
	return n, nil
}

// CatalogRegister applies a catalog registration in one transaction.
func (s *Store) CatalogRegister(idx uint64, req *CatalogRegisterRequest) error {
	db, _ := s.current()
	tx := db.Txn(true)
	defer tx.Abort()
	name := req.Node.Name
	cur, err := agentNodeTxn(tx, name)
	if err != nil {
		return err
	}
	if cur == nil || !req.SkipNodeUpdate {
		n := req.Node
		n.External = true
		if err := ensureNodeTxn(tx, idx, &n); err != nil {
			return err
		}
	}
	tables := []string{}
	if in := req.Service; in != nil {
		c := *in
		c.Node = name
		c.CreateIndex, c.ModifyIndex = idx, idx
		raw, err := tx.First(tableInstances, "id", name, c.ID)
		if err != nil {
			return err
		}
		if raw != nil {
			c.CreateIndex = raw.(*Instance).CreateIndex
		}
		if err := tx.Insert(tableInstances, &c); err != nil {
			return err
		}
		tables = append(tables, tableInstances)
	}
	at := s.logTime.Load()
	for _, chk := range req.Checks {
		c := *chk
		c.Node = name
		if c.ServiceID != "" {
			raw, err := tx.First(tableInstances, "id", name, c.ServiceID)
			if err != nil {
				return err
			}
			if raw == nil {
				return fmt.Errorf("%w: check %q: ServiceID %q is not registered on node %q", ErrNotFound, c.CheckID, c.ServiceID, name)
			}
			inst := raw.(*Instance)
			c.ServiceName, c.ServiceTags = inst.Service, inst.Tags
		}
		if err := ensureCheckTxn(tx, idx, at, &c); err != nil {
			return err
		}
		tables = append(tables, tableChecks)
	}
	if len(tables) > 0 {
		if err := bumpIndex(tx, idx, tables...); err != nil {
			return err
		}
	}
	tx.Commit()
	return nil
}

// CatalogDeregister applies a catalog deregistration. Removing what is
// not there is not an error, as in Consul.
func (s *Store) CatalogDeregister(idx uint64, req *CatalogDeregisterRequest) error {
	db, _ := s.current()
	tx := db.Txn(false)
	n, err := agentNodeTxn(tx, req.Node)
	tx.Abort()
	if err != nil || n == nil {
		return err
	}
	if req.ServiceID == "" && req.CheckID == "" {
		return s.DeleteNode(idx, req.Node)
	}
	if req.ServiceID != "" {
		if err := s.DeleteService(idx, req.Node, req.ServiceID); err != nil {
			return err
		}
	}
	if req.CheckID != "" {
		return s.DeleteCheck(idx, req.Node, req.CheckID)
	}
	return nil
}

// authorizeCatalogRegister is Consul's rule for a catalog registration:
// node:write to create or change the node, service:write on the service
// (and on the one it replaces, when that had another name, and on a
// connect-proxy's destination service), and for each
// check service:write on its service or node:write for a node check.
func authorizeCatalogRegister(authz *acl.Authorizer, s *Store, c *CatalogRegisterRequest) error {
	name := c.Node.Name
	_, cur, _, err := s.Node(nil, name)
	if err != nil {
		return err
	}
	if cur == nil || !c.SkipNodeUpdate {
		if err := authz.NodeWrite(name); err != nil {
			return err
		}
	}
	if in := c.Service; in != nil {
		if err := authorizeServiceWrite(authz, in); err != nil {
			return err
		}
		if _, old, err := s.Instance(nil, name, in.ID); err != nil {
			return err
		} else if old != nil && old.Service != in.Service {
			if err := authz.ServiceWrite(old.Service); err != nil {
				return err
			}
		}
	}
	for _, chk := range c.Checks {
		switch {
		case chk.ServiceID == "":
			if err := authz.NodeWrite(name); err != nil {
				return err
			}
		case c.Service != nil && chk.ServiceID == c.Service.ID:
			// Checked above.
		default:
			if err := authorizeInstance(authz, s, name, chk.ServiceID); err != nil {
				return err
			}
		}
	}
	return nil
}

// authorizeCatalogDeregister is Consul's rule for a catalog
// deregistration: node:write for the node, service:write on the service,
// and for a check what its service or node needs.
func authorizeCatalogDeregister(authz *acl.Authorizer, s *Store, c *CatalogDeregisterRequest) error {
	if c.ServiceID == "" && c.CheckID == "" {
		return authz.NodeWrite(c.Node)
	}
	if c.ServiceID != "" {
		if err := authorizeInstance(authz, s, c.Node, c.ServiceID); err != nil {
			return err
		}
	}
	if c.CheckID != "" {
		return authorizeCheck(authz, s, c.Node, c.CheckID)
	}
	return nil
}
