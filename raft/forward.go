package raft

import (
	"fmt"

	"github.com/vmesh/vmesh/discovery"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Which forwarded commands a caller may send. The caller is the node its
// certificate names, never what the command says about itself:
//
//   - node-scoped writes (the node itself, its services and checks) must
//     name the caller's own node: a node writes only its own services and
//     checks and deregisters only itself;
//   - commands only the leader issues itself (the CA, spending a join
//     token's use, VIP allocations, revocations) are never accepted from
//     another node, so no node can plant a CA, mint a backdoor use of a
//     token, move a VIP or revoke another node;
//   - cluster-wide writes an operator makes through any member's HTTP API
//     (KV, sessions, transactions, config entries, intentions, join
//     tokens, the ACL state) carry the request's ACL token, and the leader
//     authorizes them with it (acl.go) when ACLs are on.
type forwardRule int

const (
	forwardOwnNode forwardRule = iota + 1
	forwardLeaderOnly
	forwardAny
)

var forwardRules = map[discovery.MessageType]forwardRule{
	discovery.RegisterNodeType:      forwardOwnNode,
	discovery.DeregisterNodeType:    forwardOwnNode,
	discovery.RegisterServiceType:   forwardOwnNode,
	discovery.DeregisterServiceType: forwardOwnNode,
	discovery.RegisterCheckType:     forwardOwnNode,
	discovery.DeregisterCheckType:   forwardOwnNode,
	discovery.UpdateCheckType:       forwardOwnNode,
	discovery.SetCAType:             forwardLeaderOnly,
	discovery.TokenUseType:          forwardLeaderOnly,
	discovery.VIPType:               forwardLeaderOnly,
	discovery.RevocationType:        forwardLeaderOnly,
	discovery.KVType:                forwardAny,
	discovery.ConfigEntryType:       forwardAny,
	discovery.IntentionType:         forwardAny,
	discovery.TokenCreateType:       forwardAny,
	discovery.TokenDeleteType:       forwardAny,
	discovery.TokenRevokeType:       forwardAny,
	discovery.ACLTokenSetType:       forwardAny,
	discovery.ACLTokenDeleteType:    forwardAny,
	discovery.ACLPolicySetType:      forwardAny,
	discovery.ACLPolicyDeleteType:   forwardAny,
	discovery.ACLRoleSetType:        forwardAny,
	discovery.ACLRoleDeleteType:     forwardAny,
	discovery.ACLBootstrapType:      forwardAny,
	discovery.ACLChangedType:        forwardLeaderOnly,
	discovery.SessionType:           forwardAny,
	discovery.TxnType:               forwardAny,
	// External nodes only: the catalog refuses an agent's node whoever
	// sends it (discovery/catalog_register.go).
	discovery.CatalogRegisterType:   forwardAny,
	discovery.CatalogDeregisterType: forwardAny,
	discovery.AutopilotSetType:      forwardAny,
}

// authorizeForward checks that caller may have the leader apply buf (one
// type byte, then the msgpack command). A refusal is a PermissionDenied
// that names the command and why.
func authorizeForward(caller string, buf []byte) error {
	if len(buf) == 0 {
		return status.Error(codes.InvalidArgument, "empty command")
	}
	t := discovery.MessageType(buf[0]) &^ discovery.IgnoreUnknownTypeFlag
	switch forwardRules[t] {
	case forwardAny:
		return nil
	case forwardLeaderOnly:
		return status.Errorf(codes.PermissionDenied, "command %d is the leader's own; no node may forward it", t)
	case forwardOwnNode:
		node, err := commandNode(t, buf[1:])
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "decoding command %d: %v", t, err)
		}
		if node != caller {
			return status.Errorf(codes.PermissionDenied, "node %q may write only its own node, services and checks, not node %q's", caller, node)
		}
		return nil
	}
	return status.Errorf(codes.PermissionDenied, "command %d may not be forwarded", t)
}

// commandNode is the node a node-scoped command writes.
func commandNode(t discovery.MessageType, body []byte) (string, error) {
	switch t {
	case discovery.RegisterNodeType:
		var c discovery.RegisterNodeRequest
		err := decode(body, &c)
		return c.Node.Name, err
	case discovery.DeregisterNodeType:
		var c discovery.DeregisterNodeRequest
		err := decode(body, &c)
		return c.Node, err
	case discovery.RegisterServiceType:
		var c discovery.RegisterServiceRequest
		if err := decode(body, &c); err != nil {
			return "", err
		}
		// Its checks must be the same node's: a check names its node too;
		// so must its sidecar record (which the catalog pins there anyway).
		for _, chk := range c.Checks {
			if chk != nil && chk.Node != c.Instance.Node {
				return chk.Node, nil
			}
		}
		if c.Sidecar != nil && c.Sidecar.Node != c.Instance.Node {
			return c.Sidecar.Node, nil
		}
		return c.Instance.Node, nil
	case discovery.DeregisterServiceType:
		var c discovery.DeregisterServiceRequest
		err := decode(body, &c)
		return c.Node, err
	case discovery.RegisterCheckType:
		var c discovery.RegisterCheckRequest
		err := decode(body, &c)
		return c.Check.Node, err
	case discovery.DeregisterCheckType:
		var c discovery.DeregisterCheckRequest
		err := decode(body, &c)
		return c.Node, err
	case discovery.UpdateCheckType:
		var c discovery.UpdateCheckRequest
		err := decode(body, &c)
		return c.Node, err
	}
	return "", fmt.Errorf("command %d is not node-scoped", t)
}
