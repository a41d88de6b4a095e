package acl

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Store is what the resolver reads: the lead's ACL tables. Each lookup
// returns nil and no error when there is no such object; an error means
// the store could not answer.
type Store interface {
	TokenBySecret(secret string) (*Token, error)
	PolicyByID(id string) (*Policy, error)
	PolicyByName(name string) (*Policy, error)
	RoleByID(id string) (*Role, error)
	RoleByName(name string) (*Role, error)
}

// ResolverConfig configures a Resolver.
type ResolverConfig struct {
	Store Store
	// Datacenter is this agent's; policies and identities limited to
	// other datacenters do not apply here.
	Datacenter string
	// DefaultPolicy decides what no rule covers.
	DefaultPolicy DefaultPolicy
	// Now is the clock for token expiry; nil is time.Now.
	Now func() time.Time
}

// Resolver turns a request's secret into the token and its Authorizer.
// It is safe for concurrent use.
type Resolver struct {
	cfg ResolverConfig

	mu     sync.Mutex
	parsed map[string][]Rule // by rules text, so an edited policy is parsed anew
}

// maxParsed bounds the parse cache; it is emptied when full.
const maxParsed = 1024

// NewResolver checks cfg and returns a Resolver.
func NewResolver(cfg ResolverConfig) (*Resolver, error) {
	if cfg.Store == nil {
		return nil, errors.New("acl: resolver needs a store")
	}
	if cfg.Datacenter == "" {
		return nil, errors.New("acl: resolver needs the datacenter")
	}
	if _, err := ParseDefaultPolicy(string(cfg.DefaultPolicy)); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Resolver{cfg: cfg, parsed: map[string][]Rule{}}, nil
}

// Resolve finds the token whose SecretID is secret ("" is the anonymous
// token) and builds its Authorizer. A secret that names no token, or an
// expired one, is ErrNotFound. Without an anonymous token in the store
// (before ACLs are set up) the anonymous token is synthesized: it has no
// rules, so the default policy decides for it.
func (r *Resolver) Resolve(secret string) (*Token, *Authorizer, error) {
	if secret == "" {
		secret = AnonymousSecretID
	}
	tok, err := r.cfg.Store.TokenBySecret(secret)
	if err != nil {
		return nil, nil, fmt.Errorf("acl: reading token: %w", err)
	}
	if tok == nil && secret == AnonymousSecretID {
		anon := AnonymousToken()
		tok = &anon
	}
	if tok == nil || tok.Expired(r.cfg.Now()) {
		return nil, nil, ErrNotFound
	}
	authz, err := r.Authorizer(tok)
	if err != nil {
		return nil, nil, err
	}
	return tok, authz, nil
}

// Authorizer builds tok's Authorizer from its policies, its roles' policies
// and identities, and its own identities, with the default policy after
// them. Links by ID win over names; a link whose policy or role is gone
// is skipped, as Consul does. The built-in policies' rules are fixed and
// never read from the store. It does not check expiry (Resolve does).
func (r *Resolver) Authorizer(tok *Token) (*Authorizer, error) {
	rules, err := r.Rules(tok)
	if err != nil {
		return nil, err
	}
	return NewAuthorizer(tok.AccessorID, r.cfg.DefaultPolicy, rules), nil
}

// ResolveRules is Resolve's token and the rules its Authorizer is built
// from, for a server to hand to a client that builds the Authorizer
// itself (with its own default policy).
func (r *Resolver) ResolveRules(secret string) (*Token, []Rule, error) {
	tok, _, err := r.Resolve(secret)
	if err != nil {
		return nil, nil, err
	}
	rules, err := r.Rules(tok)
	return tok, rules, err
}

// Rules are the rules of tok's policies, roles and identities that apply
// in this datacenter (Authorizer's input).
func (r *Resolver) Rules(tok *Token) ([]Rule, error) {
	var rules []Rule
	add := func(links []Link, svcs []ServiceIdentity, nodes []NodeIdentity) error {
		for _, l := range links {
			rs, err := r.policyRules(l)
			if err != nil {
				return err
			}
			rules = append(rules, rs...)
		}
		for _, s := range svcs {
			if len(s.Datacenters) == 0 || slices.Contains(s.Datacenters, r.cfg.Datacenter) {
				rules = append(rules, ServiceIdentityRules(s.ServiceName)...)
			}
		}
		for _, n := range nodes {
			if n.Datacenter == r.cfg.Datacenter {
				rules = append(rules, NodeIdentityRules(n.NodeName)...)
			}
		}
		return nil
	}
	if err := add(tok.Policies, tok.ServiceIdentities, tok.NodeIdentities); err != nil {
		return nil, err
	}
	for _, l := range tok.Roles {
		role, err := lookup(l, r.cfg.Store.RoleByID, r.cfg.Store.RoleByName)
		if err != nil {
			return nil, fmt.Errorf("acl: reading role %s: %w", linkName(l), err)
		}
		if role == nil {
			continue
		}
		if err := add(role.Policies, role.ServiceIdentities, role.NodeIdentities); err != nil {
			return nil, err
		}
	}
	return rules, nil
}

func (r *Resolver) policyRules(l Link) ([]Rule, error) {
	switch {
	case l.ID == ManagementPolicyID || (l.ID == "" && l.Name == ManagementPolicyName):
		return r.parse(managementRules)
	case l.ID == ReadOnlyPolicyID || (l.ID == "" && l.Name == ReadOnlyPolicyName):
		return r.parse(readOnlyRules)
	}
	p, err := lookup(l, r.cfg.Store.PolicyByID, r.cfg.Store.PolicyByName)
	if err != nil {
		return nil, fmt.Errorf("acl: reading policy %s: %w", linkName(l), err)
	}
	if p == nil || (len(p.Datacenters) > 0 && !slices.Contains(p.Datacenters, r.cfg.Datacenter)) {
		return nil, nil
	}
	rules, err := r.parse(p.Rules)
	if err != nil {
		// Rules are checked when written, so this is a damaged store. The
		// token's requests fail rather than run with fewer rules.
		return nil, fmt.Errorf("acl: policy %q (%s): %w", p.Name, p.ID, err)
	}
	return rules, nil
}

func (r *Resolver) parse(src string) ([]Rule, error) {
	r.mu.Lock()
	rules, ok := r.parsed[src]
	r.mu.Unlock()
	if ok {
		return rules, nil
	}
	rules, err := ParseRules(src)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	if len(r.parsed) >= maxParsed {
		clear(r.parsed)
	}
	r.parsed[src] = rules
	r.mu.Unlock()
	return rules, nil
}

func lookup[T any](l Link, byID, byName func(string) (*T, error)) (*T, error) {
	if l.ID != "" {
		return byID(l.ID)
	}
	if l.Name != "" {
		return byName(l.Name)
	}
	return nil, nil
}

func linkName(l Link) string {
	if l.ID != "" {
		return l.ID
	}
	return fmt.Sprintf("%q", l.Name)
}
