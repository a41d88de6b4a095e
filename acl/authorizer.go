package acl

import (
	"fmt"
	"slices"
	"strings"
)

// DefaultPolicy decides what no rule of a token covers: Consul's
// acl.default_policy.
type DefaultPolicy string

const (
	DefaultAllow DefaultPolicy = "allow"
	DefaultDeny  DefaultPolicy = "deny"
)

// ParseDefaultPolicy checks a configured default policy.
func ParseDefaultPolicy(s string) (DefaultPolicy, error) {
	switch p := DefaultPolicy(s); p {
	case DefaultAllow, DefaultDeny:
		return p, nil
	}
	return "", fmt.Errorf("acl: default policy %q is not \"allow\" or \"deny\"", s)
}

// decision is one link's answer in Consul's authorizer chain: the token's
// merged rules answer first and undecided falls through to the default.
type decision uint8

const (
	undecided decision = iota
	allow
	deny
)

// enforce is what a rule granting granted answers to a request for want.
func enforce(granted, want Access) decision {
	switch granted {
	case AccessWrite:
		return allow
	case AccessList:
		if want == AccessList || want == AccessRead {
			return allow
		}
		return deny
	case AccessRead:
		if want == AccessRead {
			return allow
		}
		return deny
	case AccessDeny:
		return deny
	}
	return undecided
}

// table holds one resource's rules after merging: at most one exact and
// one prefix rule per name.
type table struct {
	exact, prefix map[string]Access
	// lens are the lengths of the prefix rules' names, longest first, so
	// that a lookup tries only the prefixes that have rules.
	lens []int
}

func (t *table) add(name string, prefix bool, a Access) {
	m := &t.exact
	if prefix {
		m = &t.prefix
		if !slices.Contains(t.lens, len(name)) {
			t.lens = append(t.lens, len(name))
			slices.SortFunc(t.lens, func(x, y int) int { return y - x })
		}
	}
	if *m == nil {
		*m = map[string]Access{}
	}
	(*m)[name] = stronger((*m)[name], a)
}

// lookup is the rule that governs name: the exact rule, else the longest
// prefix rule.
func (t *table) lookup(name string) (Access, bool) {
	if t == nil {
		return AccessNone, false
	}
	if a, ok := t.exact[name]; ok {
		return a, true
	}
	return t.longestPrefix(name)
}

// longestPrefix is the prefix rule with the longest name that name starts
// with.
func (t *table) longestPrefix(name string) (Access, bool) {
	for _, n := range t.lens {
		if n > len(name) {
			continue
		}
		if a, ok := t.prefix[name[:n]]; ok {
			return a, true
		}
	}
	return AccessNone, false
}

func (t *table) decide(name string, want Access) decision {
	a, _ := t.lookup(name)
	return enforce(a, want)
}

// any allows when some rule grants want (Consul's anyAllowed): "may this
// token write some service?". A catch-all prefix rule that does not grant
// it denies; otherwise it is undecided.
func (t *table) any(want Access) decision {
	if t == nil {
		return undecided
	}
	for _, m := range []map[string]Access{t.exact, t.prefix} {
		for _, a := range m {
			if enforce(a, want) == allow {
				return allow
			}
		}
	}
	if a, ok := t.prefix[""]; ok {
		return enforce(a, want)
	}
	return undecided
}

// all denies when some rule does not grant want (Consul's allAllowed):
// "may this token read every service?". It allows only with a catch-all
// prefix rule that grants it; otherwise it is undecided.
func (t *table) all(want Access) decision {
	if t == nil {
		return undecided
	}
	for _, m := range []map[string]Access{t.exact, t.prefix} {
		for _, a := range m {
			if enforce(a, want) == deny {
				return deny
			}
		}
	}
	if a, ok := t.prefix[""]; ok {
		return enforce(a, want)
	}
	return undecided
}

// Authorizer answers what one token may do. Every method returns nil when
// the token may, and a *PermissionDeniedError (errors.Is
// ErrPermissionDenied) naming the accessor, permission and resource when
// it may not. It is immutable and safe for concurrent use.
type Authorizer struct {
	accessorID string
	tables     map[Resource]*table
	// What no rule covers: everything but acl and snapshot follows
	// allowDefault; acl and snapshot need a rule unless manage.
	allowDefault, manage bool
}

// NewAuthorizer builds the authorizer for a token whose policies,
// roles and identities come to rules (in any order; duplicates merge,
// deny first), with def for what they do not cover.
//
// As in Consul, a default of allow never grants acl:read, acl:write or
// snapshots: those need a rule.
func NewAuthorizer(accessorID string, def DefaultPolicy, rules []Rule) *Authorizer {
	a := &Authorizer{accessorID: accessorID, tables: map[Resource]*table{}, allowDefault: def == DefaultAllow}
	// Service rules merge their policy and intentions separately, and
	// intentions are derived only after merging, as Consul does.
	type svcKey struct {
		name   string
		prefix bool
	}
	type svcRule struct{ access, intentions Access }
	var svcs []svcKey
	merged := map[svcKey]*svcRule{}
	for _, r := range rules {
		if r.Resource == ResourceService {
			k := svcKey{r.Name, r.Prefix}
			m := merged[k]
			if m == nil {
				m = &svcRule{}
				merged[k] = m
				svcs = append(svcs, k)
			}
			m.access = stronger(m.access, r.Access)
			m.intentions = stronger(m.intentions, r.Intentions)
			continue
		}
		a.table(r.Resource).add(r.Name, r.Prefix, r.Access)
	}
	for _, k := range svcs {
		m := merged[k]
		a.table(ResourceService).add(k.name, k.prefix, m.access)
		in := m.intentions
		if in == AccessNone {
			in = AccessDeny
			if m.access == AccessRead || m.access == AccessWrite {
				in = AccessRead
			}
		}
		a.table(ResourceIntention).add(k.name, k.prefix, in)
	}
	return a
}

func (a *Authorizer) table(r Resource) *table {
	t := a.tables[r]
	if t == nil {
		t = &table{}
		a.tables[r] = t
	}
	return t
}

// ManageAll allows everything, acl:write included: what a request gets
// when ACLs are off, and the authorizer of the agent's recovery token.
func ManageAll(accessorID string) *Authorizer {
	return &Authorizer{accessorID: accessorID, allowDefault: true, manage: true}
}

// AccessorID is the token's accessor ID, for logs and audit.
func (a *Authorizer) AccessorID() string { return a.accessorID }

// check turns a decision into the answer; undecided falls to the default.
// name is quoted in the message unless it is empty, as in Consul.
func (a *Authorizer) check(d decision, res Resource, want Access, name string) error {
	if d == undecided {
		d = deny
		if a.allowDefault && res != ResourceACL {
			d = allow
		}
		if a.manage {
			d = allow
		}
	}
	if d == allow {
		return nil
	}
	return &PermissionDeniedError{AccessorID: a.accessorID, Resource: res, Access: want, Name: name}
}

func (a *Authorizer) named(res Resource, want Access, name string) error {
	return a.check(a.tables[res].decide(name, want), res, want, name)
}

// scalar is a rule without a name; mesh and peering fall back to the
// token's operator rule when they have none of their own, as in Consul.
func (a *Authorizer) scalar(res Resource, want Access) error {
	d := undecided
	for _, r := range []Resource{res, ResourceOperator} {
		if g, ok := a.tables[r].lookup(""); ok {
			d = enforce(g, want)
			break
		}
		if res != ResourceMesh && res != ResourcePeering {
			break
		}
	}
	return a.check(d, res, want, "")
}

func (a *Authorizer) ACLRead() error  { return a.scalar(ResourceACL, AccessRead) }
func (a *Authorizer) ACLWrite() error { return a.scalar(ResourceACL, AccessWrite) }

// Snapshot guards saving and restoring raft snapshots, which hold every
// secret: it needs acl = "write".
func (a *Authorizer) Snapshot() error { return a.scalar(ResourceACL, AccessWrite) }

func (a *Authorizer) AgentRead(node string) error  { return a.named(ResourceAgent, AccessRead, node) }
func (a *Authorizer) AgentWrite(node string) error { return a.named(ResourceAgent, AccessWrite, node) }
func (a *Authorizer) EventRead(name string) error  { return a.named(ResourceEvent, AccessRead, name) }
func (a *Authorizer) EventWrite(name string) error { return a.named(ResourceEvent, AccessWrite, name) }

// IntentionRead and IntentionWrite take the intention's destination
// service. For the wildcard destination "*", read needs intentions read
// on some service and write needs intentions write on every service, as
// in Consul.
func (a *Authorizer) IntentionRead(dest string) error {
	if dest == "*" {
		return a.check(a.tables[ResourceIntention].any(AccessRead), ResourceIntention, AccessRead, dest)
	}
	return a.named(ResourceIntention, AccessRead, dest)
}

// IntentionWrite: see IntentionRead.
func (a *Authorizer) IntentionWrite(dest string) error {
	if dest == "*" {
		return a.check(a.tables[ResourceIntention].all(AccessWrite), ResourceIntention, AccessWrite, dest)
	}
	return a.named(ResourceIntention, AccessWrite, dest)
}

func (a *Authorizer) KeyRead(key string) error  { return a.named(ResourceKey, AccessRead, key) }
func (a *Authorizer) KeyWrite(key string) error { return a.named(ResourceKey, AccessWrite, key) }

// KeyList guards listing the keys under prefix (?keys). As in Consul, only
// a list or write rule grants it: a read rule does not. Consul checks it
// only with acl.enable_key_list_policy; otherwise a listing is filtered
// key by key with KeyRead.
func (a *Authorizer) KeyList(prefix string) error { return a.named(ResourceKey, AccessList, prefix) }

// KeyWritePrefix guards writing every key under prefix at once (a
// recursive delete): the longest prefix rule covering prefix must grant
// write, and no rule under prefix may grant less.
func (a *Authorizer) KeyWritePrefix(prefix string) error {
	t := a.tables[ResourceKey]
	d := undecided
	if t != nil {
		if g, ok := t.longestPrefix(prefix); ok {
			d = allow
			if g != AccessWrite {
				d = deny
			}
		}
		if d != deny {
		scan:
			for _, m := range []map[string]Access{t.exact, t.prefix} {
				for name, g := range m {
					if g != AccessWrite && strings.HasPrefix(name, prefix) {
						d = deny
						break scan
					}
				}
			}
		}
	}
	return a.check(d, ResourceKey, AccessWrite, prefix)
}

func (a *Authorizer) KeyringRead() error  { return a.scalar(ResourceKeyring, AccessRead) }
func (a *Authorizer) KeyringWrite() error { return a.scalar(ResourceKeyring, AccessWrite) }

// MeshRead and MeshWrite follow the token's mesh rule, or its operator
// rule when it has none.
func (a *Authorizer) MeshRead() error { return a.scalar(ResourceMesh, AccessRead) }

// MeshWrite: see MeshRead.
func (a *Authorizer) MeshWrite() error { return a.scalar(ResourceMesh, AccessWrite) }

func (a *Authorizer) NodeRead(name string) error  { return a.named(ResourceNode, AccessRead, name) }
func (a *Authorizer) NodeWrite(name string) error { return a.named(ResourceNode, AccessWrite, name) }

// NodeReadAll is read on every node: no node rule may deny it.
func (a *Authorizer) NodeReadAll() error {
	return a.check(a.tables[ResourceNode].all(AccessRead), ResourceNode, AccessRead, "")
}

func (a *Authorizer) OperatorRead() error  { return a.scalar(ResourceOperator, AccessRead) }
func (a *Authorizer) OperatorWrite() error { return a.scalar(ResourceOperator, AccessWrite) }

// PeeringRead and PeeringWrite follow the peering rule, or operator.
func (a *Authorizer) PeeringRead() error { return a.scalar(ResourcePeering, AccessRead) }

// PeeringWrite: see PeeringRead.
func (a *Authorizer) PeeringWrite() error { return a.scalar(ResourcePeering, AccessWrite) }

func (a *Authorizer) QueryRead(name string) error  { return a.named(ResourceQuery, AccessRead, name) }
func (a *Authorizer) QueryWrite(name string) error { return a.named(ResourceQuery, AccessWrite, name) }

func (a *Authorizer) ServiceRead(name string) error {
	return a.named(ResourceService, AccessRead, name)
}
func (a *Authorizer) ServiceWrite(name string) error {
	return a.named(ResourceService, AccessWrite, name)
}

// ServiceReadAll is read on every service: no service rule may deny it.
func (a *Authorizer) ServiceReadAll() error {
	return a.check(a.tables[ResourceService].all(AccessRead), ResourceService, AccessRead, "")
}

// ServiceWriteAny is write on some service: what a workload that presents
// a token must have (Consul uses it for the Connect CA endpoints).
func (a *Authorizer) ServiceWriteAny() error {
	return a.check(a.tables[ResourceService].any(AccessWrite), ResourceService, AccessWrite, "")
}

func (a *Authorizer) SessionRead(node string) error {
	return a.named(ResourceSession, AccessRead, node)
}
func (a *Authorizer) SessionWrite(node string) error {
	return a.named(ResourceSession, AccessWrite, node)
}
