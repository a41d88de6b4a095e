package discovery

import (
	"testing"

	"github.com/vmesh/vmesh/acl"
)

// TestACLTokenLinksDeduplicated: a token that links one policy twice (by
// ID and by name) keeps one link, as Consul's token writes do.
func TestACLTokenLinksDeduplicated(t *testing.T) {
	s := NewStore()
	p := &acl.Policy{ID: "00000000-0000-4000-8000-000000000001", Name: "p1", Rules: `key "" { policy = "read" }`}
	if err := s.ACLPolicySet(1, p); err != nil {
		t.Fatal(err)
	}
	tok := &acl.Token{AccessorID: "00000000-0000-4000-a000-000000000001", SecretID: "00000000-0000-4000-9000-000000000001",
		Policies: []acl.Link{{ID: p.ID}, {Name: "p1"}}}
	if err := s.ACLTokenSet(2, tok); err != nil {
		t.Fatal(err)
	}
	_, got, err := s.ACLToken(nil, tok.AccessorID)
	if err != nil || got == nil {
		t.Fatalf("ACLToken = %v, %v", got, err)
	}
	if len(got.Policies) != 1 || got.Policies[0] != (acl.Link{ID: p.ID, Name: "p1"}) {
		t.Errorf("Policies = %v, want one link to p1", got.Policies)
	}
}
