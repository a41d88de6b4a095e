package acl

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeStore is an in-memory Store; err, when set, fails every lookup.
type fakeStore struct {
	tokens   []*Token
	policies []*Policy
	roles    []*Role
	err      error
}

func (s *fakeStore) TokenBySecret(secret string) (*Token, error) {
	for _, t := range s.tokens {
		if t.SecretID == secret {
			return t, s.err
		}
	}
	return nil, s.err
}

func (s *fakeStore) PolicyByID(id string) (*Policy, error) {
	for _, p := range s.policies {
		if p.ID == id {
			return p, s.err
		}
	}
	return nil, s.err
}

func (s *fakeStore) PolicyByName(name string) (*Policy, error) {
	for _, p := range s.policies {
		if p.Name == name {
			return p, s.err
		}
	}
	return nil, s.err
}

func (s *fakeStore) RoleByID(id string) (*Role, error) {
	for _, r := range s.roles {
		if r.ID == id {
			return r, s.err
		}
	}
	return nil, s.err
}

func (s *fakeStore) RoleByName(name string) (*Role, error) {
	for _, r := range s.roles {
		if r.Name == name {
			return r, s.err
		}
	}
	return nil, s.err
}

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newResolver(t *testing.T, s Store, def DefaultPolicy) *Resolver {
	t.Helper()
	r, err := NewResolver(ResolverConfig{Store: s, Datacenter: "dc1", DefaultPolicy: def, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func testStore() *fakeStore {
	past, future := now.Add(-time.Second), now.Add(time.Hour)
	return &fakeStore{
		policies: []*Policy{
			{ID: "p-web", Name: "web-write", Rules: `service "web" { policy = "write" }`},
			{ID: "p-kv", Name: "kv-read", Rules: `{"key_prefix": {"app/": {"policy": "read"}}}`},
			{ID: "p-dc2", Name: "dc2-only", Rules: `operator = "write"`, Datacenters: []string{"dc2"}},
			{ID: "p-dc1", Name: "dc1-too", Rules: `mesh = "write"`, Datacenters: []string{"dc2", "dc1"}},
			{ID: "p-deny-db", Name: "no-db", Rules: `service "db" { policy = "deny" }`},
			// A store that says otherwise does not change the built-ins.
			{ID: ManagementPolicyID, Name: ManagementPolicyName, Rules: `acl = "deny"`},
		},
		roles: []*Role{
			{ID: "r-ops", Name: "ops", Policies: []Link{{ID: "p-kv"}}, NodeIdentities: []NodeIdentity{{NodeName: "n7", Datacenter: "dc1"}}},
			{ID: "r-db", Name: "db", ServiceIdentities: []ServiceIdentity{{ServiceName: "db"}}},
		},
		tokens: []*Token{
			{AccessorID: "a-web", SecretID: "s-web", Policies: []Link{{ID: "p-web"}}},
			{AccessorID: "a-root", SecretID: "s-root", Policies: []Link{{ID: ManagementPolicyID}}},
			{AccessorID: "a-root-by-name", SecretID: "s-root-by-name", Policies: []Link{{Name: ManagementPolicyName}}},
			{AccessorID: "a-ro", SecretID: "s-ro", Policies: []Link{{ID: ReadOnlyPolicyID}}},
			{AccessorID: "a-expired", SecretID: "s-expired", ExpirationTime: &past, Policies: []Link{{ID: ManagementPolicyID}}},
			{AccessorID: "a-fresh", SecretID: "s-fresh", ExpirationTime: &future, Policies: []Link{{ID: "p-web"}}},
			{AccessorID: "a-dc", SecretID: "s-dc", Policies: []Link{{ID: "p-dc2"}, {ID: "p-dc1"}}},
			{AccessorID: "a-gone", SecretID: "s-gone", Policies: []Link{{ID: "deleted"}, {ID: "p-web"}}, Roles: []Link{{ID: "deleted"}}},
			{AccessorID: "a-role", SecretID: "s-role", Roles: []Link{{Name: "ops"}}},
			{AccessorID: "a-svc", SecretID: "s-svc", ServiceIdentities: []ServiceIdentity{{ServiceName: "api"}}},
			{AccessorID: "a-svc-dc2", SecretID: "s-svc-dc2", ServiceIdentities: []ServiceIdentity{{ServiceName: "api", Datacenters: []string{"dc2"}}}},
			{AccessorID: "a-node", SecretID: "s-node", NodeIdentities: []NodeIdentity{{NodeName: "n1", Datacenter: "dc1"}, {NodeName: "n2", Datacenter: "dc2"}}},
			{AccessorID: "a-merge", SecretID: "s-merge", Roles: []Link{{ID: "r-db"}}, Policies: []Link{{ID: "p-deny-db"}}},
		},
	}
}

func TestResolve(t *testing.T) {
	tests := []struct {
		name, secret string
		def          DefaultPolicy
		accessor     string
		qs           []question
	}{
		{"policy by ID", "s-web", DefaultDeny, "a-web", []question{
			{"service:write", "web", true}, {"service:read", "api", false}, {"intention:read", "web", true},
		}},
		{"global-management comes from its fixed rules", "s-root", DefaultDeny, "a-root", []question{
			{"acl:write", "", true}, {"snapshot", "", true}, {"key:writeprefix", "", true}, {"intention:write", "*", true},
		}},
		{"global-management by name", "s-root-by-name", DefaultDeny, "a-root-by-name", []question{{"acl:write", "", true}}},
		{"global-read-only", "s-ro", DefaultDeny, "a-ro", []question{{"acl:read", "", true}, {"acl:write", "", false}, {"service:read", "x", true}}},
		{"not yet expired", "s-fresh", DefaultDeny, "a-fresh", []question{{"service:write", "web", true}}},
		{"policy datacenters", "s-dc", DefaultDeny, "a-dc", []question{
			{"operator:write", "", false}, {"mesh:write", "", true},
		}},
		{"links to deleted objects are skipped", "s-gone", DefaultDeny, "a-gone", []question{{"service:write", "web", true}}},
		{"role by name: policies and node identity", "s-role", DefaultDeny, "a-role", []question{
			{"key:read", "app/x", true}, {"key:write", "app/x", false},
			{"node:write", "n7", true}, {"service:read", "any", true}, {"node:read", "n8", false},
		}},
		{"service identity", "s-svc", DefaultDeny, "a-svc", []question{
			{"service:write", "api", true}, {"service:write", "api-sidecar-proxy", true},
			{"service:write", "api2", false}, {"service:read", "db", true}, {"node:read", "n1", true},
			{"node:write", "n1", false}, {"intention:read", "api", true}, {"intention:write", "api", false},
		}},
		{"service identity for another datacenter", "s-svc-dc2", DefaultDeny, "a-svc-dc2", []question{{"service:write", "api", false}}},
		{"node identity in this datacenter only", "s-node", DefaultDeny, "a-node", []question{
			{"node:write", "n1", true}, {"node:write", "n2", false}, {"service:read", "web", true}, {"service:write", "web", false},
		}},
		{"a policy's deny beats a role's identity", "s-merge", DefaultDeny, "a-merge", []question{
			{"service:write", "db", false}, {"service:write", "db-sidecar-proxy", true},
		}},
		{"anonymous synthesized, default deny", "", DefaultDeny, AnonymousAccessorID, []question{{"service:read", "web", false}}},
		{"anonymous synthesized, default allow", "", DefaultAllow, AnonymousAccessorID, []question{{"service:read", "web", true}, {"acl:read", "", false}}},
		{"anonymous by its secret", AnonymousSecretID, DefaultDeny, AnonymousAccessorID, []question{{"service:read", "web", false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, authz, err := newResolver(t, testStore(), tt.def).Resolve(tt.secret)
			if err != nil {
				t.Fatal(err)
			}
			if tok.AccessorID != tt.accessor || authz.AccessorID() != tt.accessor {
				t.Errorf("accessor: token %q, authorizer %q, want %q", tok.AccessorID, authz.AccessorID(), tt.accessor)
			}
			expect(t, authz, tt.qs)
		})
	}
}

func TestResolveStoredAnonymousToken(t *testing.T) {
	s := testStore()
	anon := AnonymousToken()
	anon.Policies = []Link{{ID: "p-web"}}
	s.tokens = append(s.tokens, &anon)
	_, authz, err := newResolver(t, s, DefaultDeny).Resolve("")
	if err != nil {
		t.Fatal(err)
	}
	expect(t, authz, []question{{"service:write", "web", true}, {"service:write", "api", false}})
}

func TestResolveNotFound(t *testing.T) {
	r := newResolver(t, testStore(), DefaultAllow)
	for _, secret := range []string{"no-such-secret", "s-expired"} {
		tok, authz, err := r.Resolve(secret)
		if !errors.Is(err, ErrNotFound) || tok != nil || authz != nil {
			t.Errorf("Resolve(%q) = %v, %v, %v; want ErrNotFound", secret, tok, authz, err)
		}
		if err != nil && err.Error() != "ACL not found" {
			t.Errorf("error text %q, want Consul's %q", err, "ACL not found")
		}
	}
}

func TestResolveFailsClosed(t *testing.T) {
	broken := errors.New("disk on fire")
	s := testStore()
	s.err = broken
	if _, _, err := newResolver(t, s, DefaultAllow).Resolve("s-web"); !errors.Is(err, broken) {
		t.Errorf("store error: got %v", err)
	}

	s = testStore()
	s.policies = append(s.policies, &Policy{ID: "p-bad", Name: "bad", Rules: `servce "x" {}`})
	s.tokens = append(s.tokens, &Token{AccessorID: "a-bad", SecretID: "s-bad", Policies: []Link{{ID: "p-web"}, {ID: "p-bad"}}})
	_, _, err := newResolver(t, s, DefaultAllow).Resolve("s-bad")
	if err == nil || !strings.Contains(err.Error(), `policy "bad"`) || errors.Is(err, ErrNotFound) {
		t.Errorf("damaged policy: got %v, want an error naming it", err)
	}
}

func TestResolverSeesEditedPolicy(t *testing.T) {
	s := testStore()
	r := newResolver(t, s, DefaultDeny)
	_, authz, err := r.Resolve("s-web")
	if err != nil {
		t.Fatal(err)
	}
	expect(t, authz, []question{{"service:write", "web", true}})
	s.policies[0] = &Policy{ID: "p-web", Name: "web-write", Rules: `service "web" { policy = "read" }`, ModifyIndex: 9}
	_, authz, err = r.Resolve("s-web")
	if err != nil {
		t.Fatal(err)
	}
	expect(t, authz, []question{{"service:write", "web", false}, {"service:read", "web", true}})
}

func TestResolverConcurrent(t *testing.T) {
	r := newResolver(t, testStore(), DefaultDeny)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for range 100 {
				_, authz, err := r.Resolve("s-role")
				if err == nil {
					err = authz.KeyRead("app/x")
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestNewResolverChecksConfig(t *testing.T) {
	tests := []struct {
		cfg  ResolverConfig
		want string
	}{
		{ResolverConfig{Datacenter: "dc1", DefaultPolicy: DefaultDeny}, "store"},
		{ResolverConfig{Store: &fakeStore{}, DefaultPolicy: DefaultDeny}, "datacenter"},
		{ResolverConfig{Store: &fakeStore{}, Datacenter: "dc1", DefaultPolicy: "maybe"}, `"maybe"`},
	}
	for _, tt := range tests {
		if _, err := NewResolver(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewResolver(%+v): got %v, want an error about %s", tt.cfg, err, tt.want)
		}
	}
}

// BenchmarkResolve is the per-request cost without an authorizer cache:
// a token with a role, two policies and an identity.
func BenchmarkResolve(b *testing.B) {
	s := testStore()
	s.tokens = append(s.tokens, &Token{AccessorID: "a-b", SecretID: "s-b",
		Policies: []Link{{ID: "p-web"}, {ID: "p-kv"}}, Roles: []Link{{ID: "r-ops"}},
		ServiceIdentities: []ServiceIdentity{{ServiceName: "api"}}})
	r, err := NewResolver(ResolverConfig{Store: s, Datacenter: "dc1", DefaultPolicy: DefaultDeny})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, _, err := r.Resolve("s-b"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkServiceRead(b *testing.B) {
	a := NewAuthorizer("tok", DefaultDeny, ManagementRules())
	for b.Loop() {
		if err := a.ServiceRead("payments-service-backend"); err != nil {
			b.Fatal(err)
		}
	}
}
