package discovery

import (
	"context"
	"fmt"

	"github.com/vmesh/vmesh/acl"
)

// AuthorizeCommand says whether authz may have cmd applied: the one table
// of which ACL rule each write needs, used by the HTTP API before it
// writes and by the leader for a write forwarded with a token. Reads of
// the catalog (to find the service a deregistration names) come from s.
//
//	node and its services, checks     node:write / service:write (Consul's agent and catalog endpoints)
//	catalog register, deregister      the same (catalog_register.go; on the receiving agent's own node, then its own commands' rule)
//	autopilot configuration           operator:write
//	KV                                key:write (a tree delete: key_prefix write with no deny under it)
//	sessions                          session:write on the session's node
//	transactions                      each operation's rule (AuthorizeTxnOp)
//	config entries                    service:write for a service's kinds, mesh:write for proxy-defaults, mesh and the gateway kinds
//	intentions                        intention:write on the destination
//	join tokens                       acl:write or operator:write
//	ACL tokens, policies, roles       acl:write (a bootstrap needs no token: it makes the first one)
//
// The commands only the leader issues (the CA, a join token's use, VIPs)
// have no rule: no HTTP request makes them, and no node may forward them.
func AuthorizeCommand(authz *acl.Authorizer, s *Store, cmd Command) error {
	switch c := cmd.(type) {
	case *RegisterServiceRequest:
		return authorizeRegisterService(authz, s, c)
	case RegisterNodeRequest:
		return authz.NodeWrite(c.Node.Name)
	case DeregisterNodeRequest:
		return authz.NodeWrite(c.Node)
	case RegisterServiceRequest:
		return authorizeRegisterService(authz, s, &c)
	case DeregisterServiceRequest:
		return authorizeInstance(authz, s, c.Node, c.ServiceID)
	case RegisterCheckRequest:
		if c.Check.ServiceID != "" {
			return authorizeInstance(authz, s, c.Check.Node, c.Check.ServiceID)
		}
		return authz.NodeWrite(c.Check.Node)
	case DeregisterCheckRequest:
		return authorizeCheck(authz, s, c.Node, c.CheckID)
	case UpdateCheckRequest:
		return authorizeCheck(authz, s, c.Node, c.CheckID)
	case CatalogRegisterRequest:
		return authorizeCatalogRegister(authz, s, &c)
	case CatalogDeregisterRequest:
		return authorizeCatalogDeregister(authz, s, &c)
	case AutopilotSetRequest:
		return authorizeAutopilot(authz)
	case KVRequest:
		if c.Op == KVDeleteTree {
			return authz.KeyWritePrefix(c.Entry.Key)
		}
		return authz.KeyWrite(c.Entry.Key)
	case ConfigEntryRequest:
		return AuthorizeConfigEntryWrite(authz, c.Entry.Kind, c.Entry.Name)
	case IntentionRequest:
		if err := authz.IntentionWrite(c.Intention.DestinationName); err != nil {
			return err
		}
		// An update by ID may move the intention off another
		// destination: that one is written too.
		if c.Op == IntentionUpdate && s != nil {
			if _, old, _ := s.IntentionByID(nil, c.Intention.ID); old != nil {
				return authz.IntentionWrite(old.DestinationName)
			}
		}
		return nil
	case TokenCreateRequest, TokenDeleteRequest, TokenRevokeRequest:
		return AuthorizeJoinTokens(authz)
	case ACLTokenSetRequest, ACLTokenDeleteRequest, ACLPolicySetRequest, ACLPolicyDeleteRequest,
		ACLRoleSetRequest, ACLRoleDeleteRequest:
		return authz.ACLWrite()
	case ACLBootstrapRequest:
		return nil
	case SessionRequest:
		return authorizeSession(authz, s, c)
	case TxnRequest:
		for i := range c.Ops {
			if err := AuthorizeTxnOp(authz, &c.Ops[i]); err != nil {
				return fmt.Errorf("transaction operation %d: %w", i, err)
			}
		}
		return nil
	}
	return fmt.Errorf("%w: no ACL rule covers command %d; it cannot be sent with a token", acl.ErrPermissionDenied, cmd.MessageType())
}

// AuthorizeJoinTokens is the rule for minting, listing and revoking join
// tokens, and for making an agent join or leave: acl:write or
// operator:write.
func AuthorizeJoinTokens(authz *acl.Authorizer) error {
	if err := authz.OperatorWrite(); err == nil {
		return nil
	}
	return authz.ACLWrite()
}

// AuthorizeConfigEntryWrite is the rule for writing a config entry.
// The gateway kinds need mesh:write, as in Consul: a gateway exposes
// services it does not own. Reading one needs service:read on the gateway.
func AuthorizeConfigEntryWrite(authz *acl.Authorizer, kind, name string) error {
	switch kind {
	case "proxy-defaults", "mesh", KindIngressGateway, KindTerminatingGateway:
		return authz.MeshWrite()
	case "service-intentions":
		return authz.IntentionWrite(name)
	}
	return authz.ServiceWrite(name)
}

// AuthorizeConfigEntryRead is the rule for reading one.
func AuthorizeConfigEntryRead(authz *acl.Authorizer, kind, name string) error {
	switch kind {
	case "proxy-defaults", "mesh":
		return authz.MeshRead()
	case "service-intentions":
		return authz.IntentionRead(name)
	}
	return authz.ServiceRead(name)
}

// authorizeSession: session:write on the session's node. A destroy names
// only the session: its node is the one s holds it on; a session s does
// not hold (ended, or s is a client's replica, which holds none) needs
// nothing here, and the leader checks a forwarded destroy again with its
// own catalog.
func authorizeSession(authz *acl.Authorizer, s *Store, c SessionRequest) error {
	node := c.Session.Node
	if c.Op == SessionDestroy {
		_, sess, err := s.Session(nil, c.Session.ID)
		if err != nil || sess == nil {
			return err
		}
		node = sess.Node
	}
	return authz.SessionWrite(node)
}

// AuthorizeTxnOp is the rule one KV operation of a transaction needs, as
// Consul's: key:read to compare (check-index, check-session) or get one
// key, key:write to change one or check that it does not exist,
// key_prefix write with no deny under it to delete a tree. A get-tree
// needs none here: its results are filtered key by key with key:read.
func AuthorizeTxnOp(authz *acl.Authorizer, op *TxnKVOp) error {
	switch op.Verb {
	case TxnKVGetTree:
		return nil
	case TxnKVGet, TxnKVGetOrEmpty, TxnKVCheckIndex, TxnKVCheckSession:
		return authz.KeyRead(op.Key)
	case TxnKVDeleteTree:
		return authz.KeyWritePrefix(op.Key)
	}
	return authz.KeyWrite(op.Key)
}

// authorizeServiceWrite is the rule for writing an instance: service:write
// on its service and, for a connect-proxy record, on the service it
// fronts too, as in Consul: the Connect views list such a record among
// its destination's endpoints, so it speaks for that service.
func authorizeServiceWrite(authz *acl.Authorizer, in *Instance) error {
	if err := authz.ServiceWrite(in.Service); err != nil {
		return err
	}
	if in.Kind == KindConnectProxy && in.Proxy != nil {
		return authz.ServiceWrite(in.Proxy.DestinationServiceName)
	}
	return nil
}

// authorizeRegisterService is the rule for an agent's registration, as
// Consul's agent vets it: the instance's, and for its sidecar record the
// same rule again (service:write on the record's name and on the service
// it fronts), plus service:write on a record of another name that it
// replaces. A service identity grants both names; a rule for the service
// alone does not cover `<name>-sidecar-proxy`, in Consul as here. The
// record a registration removes (one without SidecarService) goes with
// its service, as a deregistration takes it, on the service's rule.
func authorizeRegisterService(authz *acl.Authorizer, s *Store, c *RegisterServiceRequest) error {
	if err := authorizeServiceWrite(authz, &c.Instance); err != nil {
		return err
	}
	sc := c.Sidecar
	if sc == nil {
		return nil
	}
	if err := authorizeServiceWrite(authz, sc); err != nil {
		return err
	}
	if s == nil {
		return nil
	}
	_, old, err := s.Instance(nil, c.Instance.Node, sc.ID)
	if err != nil {
		return err
	}
	if old != nil && old.Service != sc.Service {
		return authz.ServiceWrite(old.Service)
	}
	return nil
}

func authorizeInstance(authz *acl.Authorizer, s *Store, node, id string) error {
	_, in, err := s.Instance(nil, node, id)
	if err != nil {
		return err
	}
	if in == nil {
		// Nothing to protect: the write answers "not found" itself. A
		// node:write lets it through sooner, as Consul's catalog does.
		return authz.NodeWrite(node)
	}
	return authz.ServiceWrite(in.Service)
}

func authorizeCheck(authz *acl.Authorizer, s *Store, node, id string) error {
	_, chk, err := s.Check(nil, node, id)
	if err != nil {
		return err
	}
	if chk != nil && chk.ServiceID != "" {
		return authorizeInstance(authz, s, node, chk.ServiceID)
	}
	return authz.NodeWrite(node)
}

type tokenKey struct{}

// WithToken carries a request's ACL token (its secret) to the Writer, so
// a write forwarded to the leader is authorized there too.
func WithToken(ctx context.Context, secret string) context.Context {
	return context.WithValue(ctx, tokenKey{}, secret)
}

// TokenFrom is the token WithToken put in ctx ("" when none).
func TokenFrom(ctx context.Context) string {
	s, _ := ctx.Value(tokenKey{}).(string)
	return s
}

// AuthorizeKVRead applies authz to a KV read's result, as Consul does: a
// single key needs key:read (else a 403), a list or a key listing keeps
// only what key:read allows; a session read keeps the sessions whose node
// session:read allows. filtered says whether anything was left out.
func AuthorizeKVRead(authz *acl.Authorizer, q KVQuery, res *KVResult) (filtered bool, err error) {
	switch q.Op {
	case "get":
		return false, authz.KeyRead(q.Key)
	case "list":
		kept := res.Entries[:0:0]
		for _, e := range res.Entries {
			if authz.KeyRead(e.Key) == nil {
				kept = append(kept, e)
			}
		}
		filtered, res.Entries = len(kept) != len(res.Entries), kept
	case "keys":
		kept := res.Keys[:0:0]
		for _, k := range res.Keys {
			if authz.KeyRead(k) == nil {
				kept = append(kept, k)
			}
		}
		filtered, res.Keys = len(kept) != len(res.Keys), kept
	case "session-info", "session-node", "session-list":
		// session:read on each session's node; the others are left out,
		// as Consul filters them.
		kept := res.Sessions[:0:0]
		for _, s := range res.Sessions {
			if authz.SessionRead(s.Node) == nil {
				kept = append(kept, s)
			}
		}
		filtered, res.Sessions = len(kept) != len(res.Sessions), kept
	}
	return filtered, nil
}
