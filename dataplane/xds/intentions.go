package xds

import (
	"fmt"
	"strings"

	rbacconfig "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	httprbac "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbac "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"github.com/vmesh/vmesh/discovery"
)

// Intentions become RBAC on the inbound listener, one rule set per local
// service (the filter chain its SNI selects). A peer is identified by the
// URI SAN of its client certificate, which the chain's TLS context has
// already verified against the cluster CA:
//
//   - an exact source S matches spiffe://<td>/svc/<S> (case-insensitive,
//     as service names are), the certificate the peer's proxy presents on
//     an explicit upstream of a service S;
//   - the wildcard source matches every identity of the trust domain,
//     spiffe://<td>/..., service and host-proxy certificates alike (a
//     transparently captured connection presents its host proxy's
//     certificate, so only * intentions and the default apply to it).
//
// The rules are the intentions whose destination is the service or *, as
// Consul renders them: with a default of deny, an ALLOW rule set of the
// allow intentions; with a default of allow, a DENY rule set of the deny
// intentions. Precedence is kept by carving out of each policy the
// sources that a higher-precedence intention of the other action already
// decides; a policy whose sources are all carved out is dropped. So the
// most specific intention decides, and the default decides what none
// matches — exactly discovery.IntentionDecision.

// spiffePrefix is the start of every identity in the trust domain.
func spiffePrefix(td string) string { return "spiffe://" + td + "/" }

// serviceSPIFFE is a service's identity, as the cluster CA issues it.
func serviceSPIFFE(td, service string) string { return spiffePrefix(td) + "svc/" + serviceKey(service) }

func authenticated(m *matcher.StringMatcher) *rbacconfig.Principal {
	return &rbacconfig.Principal{Identifier: &rbacconfig.Principal_Authenticated_{
		Authenticated: &rbacconfig.Principal_Authenticated{PrincipalName: m},
	}}
}

// sourcePrincipal matches a peer whose identity is source ("*": any
// identity of the trust domain).
func (v *View) sourcePrincipal(source string) *rbacconfig.Principal {
	if source == discovery.IntentionWildcard {
		return authenticated(&matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: spiffePrefix(v.trustDomain)}})
	}
	return authenticated(&matcher.StringMatcher{
		MatchPattern: &matcher.StringMatcher_Exact{Exact: serviceSPIFFE(v.trustDomain, source)},
		IgnoreCase:   true,
	})
}

// intentionsInto lists the intentions whose destination is key or *,
// highest precedence first, one per pair.
func (v *View) intentionsInto(key string) []*discovery.Intention {
	var out []*discovery.Intention
	seen := map[[2]string]bool{}
	for _, ixn := range v.intentions {
		if ixn.DestinationName != discovery.IntentionWildcard && serviceKey(ixn.DestinationName) != key {
			continue
		}
		pair := [2]string{serviceKey(ixn.SourceName), serviceKey(ixn.DestinationName)}
		if seen[pair] || pair[0] == "" {
			continue
		}
		seen[pair] = true
		out = append(out, ixn)
	}
	discovery.SortIntentions(out)
	return out
}

// intentionRules are the RBAC rules for connections into local service
// key (see the comment at the top of the file).
func (v *View) intentionRules(key string) *rbacconfig.RBAC {
	defaultAllow := v.opts.IntentionsDefaultAllow
	rules := &rbacconfig.RBAC{Action: rbacconfig.RBAC_ALLOW, Policies: map[string]*rbacconfig.Policy{}}
	// The rule set lists the intentions that differ from the default.
	listed := discovery.IntentionActionAllow
	if defaultAllow {
		rules.Action, listed = rbacconfig.RBAC_DENY, discovery.IntentionActionDeny
	}
	ixns := v.intentionsInto(key)
	for i, ixn := range ixns {
		if ixn.Action != listed {
			continue
		}
		// Sources decided earlier by a more specific intention of the
		// other action. Within one destination, two matching intentions
		// of equal precedence never share a source.
		var carve []string
		dead := false
		for _, h := range ixns[:i] {
			if h.Action == listed || h.Precedence() <= ixn.Precedence() {
				continue
			}
			switch {
			case h.SourceName == discovery.IntentionWildcard:
				dead = true
			case ixn.SourceName == discovery.IntentionWildcard:
				carve = append(carve, h.SourceName)
			case serviceKey(h.SourceName) == serviceKey(ixn.SourceName):
				dead = true
			}
		}
		if dead {
			continue
		}
		p := v.sourcePrincipal(ixn.SourceName)
		if len(carve) > 0 {
			ids := []*rbacconfig.Principal{p}
			for _, c := range carve {
				ids = append(ids, &rbacconfig.Principal{Identifier: &rbacconfig.Principal_NotId{NotId: v.sourcePrincipal(c)}})
			}
			p = &rbacconfig.Principal{Identifier: &rbacconfig.Principal_AndIds{AndIds: &rbacconfig.Principal_Set{Ids: ids}}}
		}
		rules.Policies[policyName(ixn)] = &rbacconfig.Policy{
			Permissions: []*rbacconfig.Permission{{Rule: &rbacconfig.Permission_Any{Any: true}}},
			Principals:  []*rbacconfig.Principal{p},
		}
	}
	return rules
}

// policyName names an intention's policy after its precedence, action and
// pair (a pair is unique, so the name is too).
func policyName(ixn *discovery.Intention) string {
	return fmt.Sprintf("intention/%d/%s/%s->%s", ixn.Precedence(), ixn.Action,
		strings.ToLower(ixn.SourceName), strings.ToLower(ixn.DestinationName))
}

// networkRBAC authorizes a TCP connection into key: denied ones are
// closed.
func (b *builder) networkRBAC(stat, key string) *rbac.RBAC {
	return &rbac.RBAC{StatPrefix: stat, Rules: b.v.intentionRules(key)}
}

// httpRBACFilter authorizes each request into key inside the HTTP
// connection manager: a denied request gets 403 (gRPC: PERMISSION_DENIED).
func (b *builder) httpRBACFilter(key string) *hcm.HttpFilter {
	return &hcm.HttpFilter{
		Name:       wellknown.HTTPRoleBasedAccessControl,
		ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: b.any(&httprbac.RBAC{Rules: b.v.intentionRules(key)})},
	}
}
