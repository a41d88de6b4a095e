package raft

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
)

// TestForwardOwnNodeWithToken: a node's own write that carries a token
// (its acl.tokens.agent, or an HTTP request's) is checked against that
// token by the leader on top of the certificate; without a token the
// certificate alone decides, as before.
func TestForwardOwnNodeWithToken(t *testing.T) {
	s := clusterLeader(t)
	r, err := acl.NewResolver(acl.ResolverConfig{Store: s.store, Datacenter: "dc1", DefaultPolicy: acl.DefaultDeny})
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, s, discovery.ACLTokenSetRequest{Token: acl.Token{AccessorID: "a1", SecretID: "agent-web-01",
		NodeIdentities:    []acl.NodeIdentity{{NodeName: "web-01", Datacenter: "dc1"}},
		ServiceIdentities: []acl.ServiceIdentity{{ServiceName: "web"}}}})
	c := joinClient(t, s, "web-01")
	s.SetACL(r)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	withTok := discovery.WithToken(ctx, "agent-web-01")
	if _, err := c.Apply(withTok, registerService("web-01", "web-1", "web")); err != nil {
		t.Errorf("the agent token registering web: %v", err)
	}
	if _, err := c.Apply(withTok, registerService("web-01", "db-1", "db")); err == nil || !strings.Contains(err.Error(), "Permission denied") {
		t.Errorf("the agent token registering db: %v; want Permission denied", err)
	}
	if _, err := c.Apply(discovery.WithToken(ctx, "no-such-token"), registerService("web-01", "web-2", "web")); err == nil || !strings.Contains(err.Error(), "ACL not found") {
		t.Errorf("an unknown token: %v; want ACL not found", err)
	}
	if _, err := c.Apply(ctx, registerService("web-01", "db-2", "db")); err != nil {
		t.Errorf("its own write without a token (the certificate decides): %v", err)
	}
}
