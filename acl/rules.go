package acl

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/hcl/ast"
	hclparser "github.com/hashicorp/hcl/hcl/parser"
	"github.com/hashicorp/hcl/hcl/token"
	"github.com/vmesh/vmesh/hcljson"
)

// Access is a level a rule grants. The zero value is no rule at all.
type Access uint8

const (
	AccessNone Access = iota
	AccessDeny
	AccessRead
	AccessList // key and key_prefix only: list keys without reading values
	AccessWrite
)

func (a Access) String() string {
	switch a {
	case AccessDeny:
		return "deny"
	case AccessRead:
		return "read"
	case AccessList:
		return "list"
	case AccessWrite:
		return "write"
	}
	return ""
}

// precedence orders levels for merging rules on the same name: deny beats
// write beats list beats read, as Consul merges a token's policies.
func (a Access) precedence() int {
	switch a {
	case AccessDeny:
		return 4
	case AccessWrite:
		return 3
	case AccessList:
		return 2
	case AccessRead:
		return 1
	}
	return 0
}

func stronger(a, b Access) Access {
	if b.precedence() > a.precedence() {
		return b
	}
	return a
}

// Resource is what a rule governs, named as in Consul's policies and in
// its "lacks permission 'service:write'" messages.
type Resource string

const (
	ResourceACL       Resource = "acl"
	ResourceAgent     Resource = "agent"
	ResourceEvent     Resource = "event"
	ResourceIntention Resource = "intention" // from service rules' intentions
	ResourceKey       Resource = "key"
	ResourceKeyring   Resource = "keyring"
	ResourceMesh      Resource = "mesh"
	ResourceNode      Resource = "node"
	ResourceOperator  Resource = "operator"
	ResourcePeering   Resource = "peering"
	ResourceQuery     Resource = "query"
	ResourceService   Resource = "service"
	ResourceSession   Resource = "session"
)

// Rule is one rule of a policy: Access on the resource Name, or with Prefix
// on every name that starts with Name. Resources without names (acl,
// keyring, mesh, operator, peering) have Name "" and no Prefix.
type Rule struct {
	Resource Resource
	Name     string
	Prefix   bool
	Access   Access
	// Intentions, on service rules only, is the access to intentions whose
	// destination the rule matches; AccessNone derives it from Access
	// (read or write give read, deny gives deny), as Consul does.
	Intentions Access
}

// The policy language's blocks: those that take a name (and have a
// _prefix form) and those that take a level directly (acl = "write").
var (
	namedBlocks  = []Resource{ResourceAgent, ResourceEvent, ResourceKey, ResourceNode, ResourceQuery, ResourceService, ResourceSession}
	scalarBlocks = []Resource{ResourceACL, ResourceKeyring, ResourceMesh, ResourceOperator, ResourcePeering}
)

func blockNames() string {
	var names []string
	for _, r := range namedBlocks {
		names = append(names, string(r), string(r)+"_prefix")
	}
	for _, r := range scalarBlocks {
		names = append(names, string(r))
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// ParseRules parses a policy's rules, in Consul's HCL or JSON form (JSON
// when the text starts with '{'). It reports every problem, each with its
// line. Empty text is a policy without rules.
//
//	service "web" { policy = "write" intentions = "read" }
//	service_prefix "" { policy = "read" }
//	key_prefix "app/" { policy = "list" }
//	operator = "read"
//
// Two rules on the same name in one policy merge as rules from two
// policies do (deny beats write beats list beats read); a level given twice
// (operator = ... twice) is an error.
func ParseRules(src string) ([]Rule, error) {
	text := strings.TrimSpace(src)
	if text == "" {
		return nil, nil
	}
	var list *ast.ObjectList
	if text[0] == '{' {
		var err error
		if list, err = hcljson.Parse("", []byte(src)); err != nil {
			// Rules have no file: say the line, as for HCL rules.
			if he, ok := errors.AsType[*hcljson.Error](err); ok {
				return nil, fmt.Errorf("line %d: %s", he.Pos.Line, he.Msg)
			}
			return nil, err
		}
	} else {
		f, err := parseHCL(src)
		if err != nil {
			var pe *hclparser.PosError
			if errors.As(err, &pe) {
				return nil, fmt.Errorf("line %d, column %d: %v", pe.Pos.Line, pe.Pos.Column, pe.Err)
			}
			return nil, err
		}
		list, _ = f.Node.(*ast.ObjectList)
	}
	p := &ruleParser{seen: map[Resource]int{}}
	if list != nil {
		for _, item := range list.Items {
			p.item(item)
		}
	}
	if err := errors.Join(p.errs...); err != nil {
		return nil, err
	}
	return p.rules, nil
}

// parseHCL is the HCL v1 parser, which has panicked on malformed input in
// the past; rules come from API callers, so a panic is a parse error.
func parseHCL(src string) (f *ast.File, err error) {
	defer func() {
		if r := recover(); r != nil {
			f, err = nil, fmt.Errorf("invalid HCL: %v", r)
		}
	}()
	return hclparser.Parse([]byte(src))
}

type ruleParser struct {
	rules []Rule
	errs  []error
	seen  map[Resource]int // line of each scalar block
}

func (p *ruleParser) errorf(pos token.Pos, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("line %d: %s", pos.Line, fmt.Sprintf(format, args...)))
}

// item is one top-level block. `service "web" { ... }` arrives with two
// keys; `service = { web = { ... } }` and JSON's "service": {"web": {...}}
// with one key and the names inside.
func (p *ruleParser) item(item *ast.ObjectItem) {
	key, ok := p.text(item.Keys[0].Token)
	if !ok {
		return
	}
	pos := item.Keys[0].Pos()
	kind, prefix := strings.CutSuffix(key, "_prefix")
	res := Resource(kind)
	switch {
	case slices.Contains(scalarBlocks, Resource(key)):
		p.scalar(Resource(key), item)
	case slices.Contains(namedBlocks, res):
		switch len(item.Keys) {
		case 1:
			p.names(key, res, prefix, item.Val)
		case 2:
			if name, ok := p.text(item.Keys[1].Token); ok {
				p.body(key, res, prefix, name, item.Keys[1].Pos(), item.Val)
			}
		default:
			p.errorf(item.Keys[2].Pos(), "%s takes one name, as in %s \"<name>\" { policy = \"read\" }", key, key)
		}
	default:
		p.errorf(pos, "unknown rule %q (want one of %s)", key, blockNames())
	}
}

// scalar is acl = "write" and its kind.
func (p *ruleParser) scalar(res Resource, item *ast.ObjectItem) {
	pos := item.Keys[0].Pos()
	if len(item.Keys) > 1 {
		p.errorf(item.Keys[1].Pos(), "%s takes a level, as in %s = \"read\", not a name", res, res)
		return
	}
	if first, dup := p.seen[res]; dup {
		p.errorf(pos, "%s is set twice (first at line %d)", res, first)
		return
	}
	p.seen[res] = pos.Line
	s, ok := p.str(string(res), item.Val)
	if !ok {
		return
	}
	a, err := parseAccess(s, false)
	if err != nil {
		p.errorf(item.Val.Pos(), "%s: %v", res, err)
		return
	}
	p.rules = append(p.rules, Rule{Resource: res, Access: a})
}

// names is the object (or, in JSON, list of objects) that maps names to
// rule bodies.
func (p *ruleParser) names(key string, res Resource, prefix bool, n ast.Node) {
	var objs []*ast.ObjectType
	switch n := n.(type) {
	case *ast.ObjectType:
		objs = append(objs, n)
	case *ast.ListType:
		for _, e := range n.List {
			obj, ok := e.(*ast.ObjectType)
			if !ok {
				p.errorf(e.Pos(), "%s: expected an object of names, got %s", key, describe(e))
				continue
			}
			objs = append(objs, obj)
		}
	default:
		p.errorf(n.Pos(), "%s needs a name, as in %s \"<name>\" { policy = \"read\" }", key, key)
		return
	}
	for _, obj := range objs {
		for _, it := range obj.List.Items {
			name, ok := p.text(it.Keys[0].Token)
			if !ok {
				continue
			}
			if len(it.Keys) > 1 {
				p.errorf(it.Keys[1].Pos(), "%s takes one name, as in %s \"<name>\" { policy = \"read\" }", key, key)
				continue
			}
			if _, isObj := it.Val.(*ast.ObjectType); !isObj && (name == "policy" || name == "intentions") {
				// service { policy = "read" }: the name was forgotten.
				p.errorf(it.Keys[0].Pos(), "%s needs a name, as in %s \"<name>\" { policy = \"read\" }", key, key)
				continue
			}
			p.body(key, res, prefix, name, it.Keys[0].Pos(), it.Val)
		}
	}
}

// body is { policy = "..." [intentions = "..."] } for one name.
func (p *ruleParser) body(key string, res Resource, prefix bool, name string, pos token.Pos, n ast.Node) {
	where := fmt.Sprintf("%s %q", key, name)
	obj, ok := n.(*ast.ObjectType)
	if !ok {
		p.errorf(n.Pos(), "%s: expected a block such as { policy = \"read\" }, got %s", where, describe(n))
		return
	}
	r := Rule{Resource: res, Name: name, Prefix: prefix}
	before := len(p.errs)
	seen := map[string]int{}
	for _, it := range obj.List.Items {
		field, ok := p.text(it.Keys[0].Token)
		if !ok {
			continue
		}
		fpos := it.Keys[0].Pos()
		if len(it.Keys) > 1 {
			p.errorf(it.Keys[1].Pos(), "%s: unexpected block %s", where, field)
			continue
		}
		var dst *Access
		switch {
		case field == "policy":
			dst = &r.Access
		case field == "intentions" && res == ResourceService:
			dst = &r.Intentions
		default:
			want := `"policy"`
			if res == ResourceService {
				want = `"policy" and "intentions"`
			}
			p.errorf(fpos, "%s: unknown field %q (%s takes %s)", where, field, key, want)
			continue
		}
		if first, dup := seen[field]; dup {
			p.errorf(fpos, "%s: %s is set twice (first at line %d)", where, field, first)
			continue
		}
		seen[field] = fpos.Line
		s, ok := p.str(where+": "+field, it.Val)
		if !ok {
			continue
		}
		a, err := parseAccess(s, res == ResourceKey && field == "policy")
		if err != nil {
			p.errorf(it.Val.Pos(), "%s: %s: %v", where, field, err)
			continue
		}
		*dst = a
	}
	if len(p.errs) > before {
		return
	}
	if r.Access == AccessNone {
		p.errorf(pos, "%s: policy is required", where)
		return
	}
	p.rules = append(p.rules, r)
}

func parseAccess(s string, allowList bool) (Access, error) {
	switch s {
	case "read":
		return AccessRead, nil
	case "write":
		return AccessWrite, nil
	case "deny":
		return AccessDeny, nil
	case "list":
		if allowList {
			return AccessList, nil
		}
		return AccessNone, errors.New(`"list" is for key and key_prefix rules only (want "read", "write" or "deny")`)
	}
	if allowList {
		return AccessNone, fmt.Errorf(`%q is not a level (want "read", "write", "list" or "deny")`, s)
	}
	return AccessNone, fmt.Errorf(`%q is not a level (want "read", "write" or "deny")`, s)
}

func (p *ruleParser) str(where string, n ast.Node) (string, bool) {
	lit, ok := n.(*ast.LiteralType)
	if !ok || (lit.Token.Type != token.STRING && lit.Token.Type != token.HEREDOC) {
		p.errorf(n.Pos(), "%s: expected a string such as \"read\", got %s", where, describe(n))
		return "", false
	}
	return p.text(lit.Token)
}

// text is a key's or string's value. Token.Value panics on input the
// scanner let through but cannot unquote; that is the caller's error.
func (p *ruleParser) text(t token.Token) (s string, ok bool) {
	defer func() {
		if recover() != nil {
			p.errorf(t.Pos, "invalid string %s", t.Text)
			s, ok = "", false
		}
	}()
	if t.Type == token.IDENT {
		return t.Text, true
	}
	s, ok = t.Value().(string)
	if !ok {
		p.errorf(t.Pos, "expected a string, got %s", t.Text)
	}
	return s, ok
}

func describe(n ast.Node) string {
	// Rules call an object a block; the rest is named as everywhere.
	if _, ok := n.(*ast.ObjectType); ok {
		return "a block"
	}
	return hcljson.Describe(n)
}

// ServiceIdentityRules are the rules a service identity grants, Consul's
// synthetic policy for it: write on the service and its sidecar proxy,
// read on every service and node (to discover upstreams).
func ServiceIdentityRules(service string) []Rule {
	return []Rule{
		{Resource: ResourceService, Name: service, Access: AccessWrite},
		{Resource: ResourceService, Name: service + "-sidecar-proxy", Access: AccessWrite},
		{Resource: ResourceService, Prefix: true, Access: AccessRead},
		{Resource: ResourceNode, Prefix: true, Access: AccessRead},
	}
}

// NodeIdentityRules are the rules a node identity grants: write on the
// node, read on every service.
func NodeIdentityRules(node string) []Rule {
	return []Rule{
		{Resource: ResourceNode, Name: node, Access: AccessWrite},
		{Resource: ResourceService, Prefix: true, Access: AccessRead},
	}
}

// The built-in policies' rules, Consul's text.
const (
	managementRules = `acl = "write"
agent_prefix "" {
  policy = "write"
}
event_prefix "" {
  policy = "write"
}
key_prefix "" {
  policy = "write"
}
keyring = "write"
node_prefix "" {
  policy = "write"
}
operator = "write"
mesh = "write"
peering = "write"
query_prefix "" {
  policy = "write"
}
service_prefix "" {
  policy = "write"
  intentions = "write"
}
session_prefix "" {
  policy = "write"
}
`
	readOnlyRules = `acl = "read"
agent_prefix "" {
  policy = "read"
}
event_prefix "" {
  policy = "read"
}
key_prefix "" {
  policy = "read"
}
keyring = "read"
node_prefix "" {
  policy = "read"
}
operator = "read"
mesh = "read"
peering = "read"
query_prefix "" {
  policy = "read"
}
service_prefix "" {
  policy = "read"
  intentions = "read"
}
session_prefix "" {
  policy = "read"
}
`
)

// ManagementRules and ReadOnlyRules are the built-in policies, parsed.
func ManagementRules() []Rule { return mustParse(managementRules) }

// ReadOnlyRules: see ManagementRules.
func ReadOnlyRules() []Rule { return mustParse(readOnlyRules) }

func mustParse(src string) []Rule {
	r, err := ParseRules(src)
	if err != nil {
		panic("acl: built-in policy: " + err.Error())
	}
	return r
}
