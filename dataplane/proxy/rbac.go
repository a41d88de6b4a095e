package proxy

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	rbacconfig "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	httprbac "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	netrbac "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// rbacSpec is Envoy's network or HTTP RBAC filter, in the subset the xDS
// server emits for intentions: policies whose permission is any and whose
// principals match the peer's authenticated identity (its SPIFFE ID).
type rbacSpec struct {
	// none: no rules at all, which Envoy reads as allow everything.
	none     bool
	allow    bool // action ALLOW (else DENY)
	policies []policySpec
}

type policySpec struct {
	name       string
	principals []principal
}

// principal matches a connection's peer identities (URI SANs).
type principal func(ids []string) bool

// allowed decides a connection whose verified peer has ids (none for a
// plaintext or unauthenticated peer).
func (r *rbacSpec) allowed(ids []string) bool {
	if r == nil || r.none {
		return true
	}
	matched := false
	for _, p := range r.policies {
		for _, pr := range p.principals {
			if pr(ids) {
				matched = true
				break
			}
		}
		if matched {
			break
		}
	}
	if r.allow {
		return matched
	}
	return !matched
}

func parseNetworkRBAC(r *netrbac.RBAC, path string) (*rbacSpec, error) {
	// enforcement_type ONE_TIME_ON_FIRST_BYTE (the default) is what the
	// proxy does; CONTINUOUS would need re-evaluation and is refused.
	if err := onlyFields(r, path, "stat_prefix", "rules"); err != nil {
		return nil, err
	}
	return parseRBACRules(r.GetRules(), path+".rules")
}

// parseHTTPRBAC is the HTTP RBAC filter: the same rules, decided per
// request (an allowed connection may carry a denied request after the
// intentions change).
func parseHTTPRBAC(r *httprbac.RBAC, path string) (*rbacSpec, error) {
	if err := onlyFields(r, path, "rules"); err != nil {
		return nil, err
	}
	return parseRBACRules(r.GetRules(), path+".rules")
}

// parseRBACRules reads the rules of a network or HTTP RBAC filter; path
// names the rules.
func parseRBACRules(rules *rbacconfig.RBAC, path string) (*rbacSpec, error) {
	if rules == nil {
		return &rbacSpec{none: true}, nil
	}
	if err := onlyFields(rules, path, "action", "policies"); err != nil {
		return nil, err
	}
	s := &rbacSpec{}
	switch rules.GetAction() {
	case rbacconfig.RBAC_ALLOW:
		s.allow = true
	case rbacconfig.RBAC_DENY:
	default:
		return nil, fmt.Errorf("%w: %s.action %s", ErrUnsupported, path, rules.GetAction())
	}
	names := make([]string, 0, len(rules.GetPolicies()))
	for n := range rules.GetPolicies() {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := rules.GetPolicies()[n]
		pp := fmt.Sprintf("%s.policies[%q]", path, n)
		if err := onlyFields(p, pp, "permissions", "principals"); err != nil {
			return nil, err
		}
		if len(p.GetPermissions()) == 0 {
			return nil, fmt.Errorf("%w: %s has no permissions", ErrInvalid, pp)
		}
		anyPerm := false
		for i, perm := range p.GetPermissions() {
			if err := onlyFields(perm, fmt.Sprintf("%s.permissions[%d]", pp, i), "any"); err != nil {
				return nil, err
			}
			anyPerm = anyPerm || perm.GetAny()
		}
		if !anyPerm {
			return nil, fmt.Errorf("%w: %s.permissions: only any", ErrUnsupported, pp)
		}
		ps := policySpec{name: n}
		for i, pr := range p.GetPrincipals() {
			m, err := parsePrincipal(pr, fmt.Sprintf("%s.principals[%d]", pp, i))
			if err != nil {
				return nil, err
			}
			ps.principals = append(ps.principals, m)
		}
		s.policies = append(s.policies, ps)
	}
	return s, nil
}

func parsePrincipal(p *rbacconfig.Principal, path string) (principal, error) {
	if err := onlyFields(p, path, "any", "authenticated", "and_ids", "or_ids", "not_id"); err != nil {
		return nil, err
	}
	set := func(ps *rbacconfig.Principal_Set, sp string) ([]principal, error) {
		if err := onlyFields(ps, sp, "ids"); err != nil {
			return nil, err
		}
		var out []principal
		for i, id := range ps.GetIds() {
			m, err := parsePrincipal(id, fmt.Sprintf("%s.ids[%d]", sp, i))
			if err != nil {
				return nil, err
			}
			out = append(out, m)
		}
		return out, nil
	}
	switch id := p.GetIdentifier().(type) {
	case *rbacconfig.Principal_Any:
		return func([]string) bool { return id.Any }, nil
	case *rbacconfig.Principal_Authenticated_:
		if err := onlyFields(id.Authenticated, path+".authenticated", "principal_name"); err != nil {
			return nil, err
		}
		if id.Authenticated.GetPrincipalName() == nil {
			// Any authenticated peer.
			return func(ids []string) bool { return len(ids) > 0 }, nil
		}
		sm, err := parseStringMatcher(id.Authenticated.GetPrincipalName(), path+".authenticated.principal_name")
		if err != nil {
			return nil, err
		}
		return func(ids []string) bool {
			for _, x := range ids {
				if sm(x) {
					return true
				}
			}
			return false
		}, nil
	case *rbacconfig.Principal_AndIds:
		ms, err := set(id.AndIds, path+".and_ids")
		if err != nil {
			return nil, err
		}
		return func(ids []string) bool {
			for _, m := range ms {
				if !m(ids) {
					return false
				}
			}
			return true
		}, nil
	case *rbacconfig.Principal_OrIds:
		ms, err := set(id.OrIds, path+".or_ids")
		if err != nil {
			return nil, err
		}
		return func(ids []string) bool {
			for _, m := range ms {
				if m(ids) {
					return true
				}
			}
			return false
		}, nil
	case *rbacconfig.Principal_NotId:
		m, err := parsePrincipal(id.NotId, path+".not_id")
		if err != nil {
			return nil, err
		}
		return func(ids []string) bool { return !m(ids) }, nil
	}
	return nil, fmt.Errorf("%w: %s: empty principal", ErrInvalid, path)
}

func parseStringMatcher(m *matcher.StringMatcher, path string) (func(string) bool, error) {
	if err := onlyFields(m, path, "exact", "prefix", "suffix", "contains", "safe_regex", "ignore_case"); err != nil {
		return nil, err
	}
	fold := m.GetIgnoreCase()
	norm := func(s string) string {
		if fold {
			return strings.ToLower(s)
		}
		return s
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcher.StringMatcher_Exact:
		want := norm(p.Exact)
		return func(s string) bool { return norm(s) == want }, nil
	case *matcher.StringMatcher_Prefix:
		want := norm(p.Prefix)
		return func(s string) bool { return strings.HasPrefix(norm(s), want) }, nil
	case *matcher.StringMatcher_Suffix:
		want := norm(p.Suffix)
		return func(s string) bool { return strings.HasSuffix(norm(s), want) }, nil
	case *matcher.StringMatcher_Contains:
		want := norm(p.Contains)
		return func(s string) bool { return strings.Contains(norm(s), want) }, nil
	case *matcher.StringMatcher_SafeRegex:
		// ignore_case does not apply to a regex (as in Envoy).
		re, err := parseRegex(p.SafeRegex, path+".safe_regex")
		if err != nil {
			return nil, err
		}
		return re.MatchString, nil
	}
	return nil, fmt.Errorf("%w: %s: empty matcher", ErrInvalid, path)
}

// parseRegex compiles an RE2 regex for a full match, as Envoy's
// safe_regex matches the whole value. Go's regexp is RE2.
func parseRegex(m *matcher.RegexMatcher, path string) (*regexp.Regexp, error) {
	if err := onlyFields(m, path, "regex"); err != nil {
		return nil, err
	}
	re, err := regexp.Compile(`^(?:` + m.GetRegex() + `)$`)
	if err != nil {
		return nil, fmt.Errorf("%w: %s.regex %q: %v", ErrInvalid, path, m.GetRegex(), err)
	}
	return re, nil
}
