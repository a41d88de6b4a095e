package httpapi

import (
	"net/http"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/vmesh/vmesh/acl"
)

// TestACLTokenListFilters: GET /v1/acl/tokens keeps the tokens that link
// ?servicename=, ?policy= or ?role=, and refuses ?authmethod=.
func TestACLTokenListFilters(t *testing.T) {
	f := newACLFixture(t)
	for i, svc := range []string{"s1", "s1", "s2"} {
		if err := f.s.ACLTokenSet(f.next(), &acl.Token{AccessorID: "00000000-0000-4000-b000-00000000000" + string(rune('1'+i)),
			SecretID: "00000000-0000-4000-c000-00000000000" + string(rune('1'+i)), ServiceIdentities: []acl.ServiceIdentity{{ServiceName: svc}}}); err != nil {
			t.Fatal(err)
		}
	}
	c := f.client(t, f.mgmt)
	toks, _, err := c.ACL().TokenListFiltered(api.ACLTokenFilterOptions{ServiceName: "s1"}, nil)
	if err != nil || len(toks) != 2 {
		t.Fatalf("?servicename=s1: %d tokens, %v; want 2", len(toks), err)
	}
	all, _, err := c.ACL().TokenList(nil)
	if err != nil || len(all) < 4 {
		t.Fatalf("no filter: %d tokens, %v; want every token", len(all), err)
	}
	if code, _, body := f.get(t, f.mgmt, "/v1/acl/tokens?authmethod=x"); code != http.StatusBadRequest {
		t.Errorf("?authmethod: %d %s, want 400", code, body)
	}
}
