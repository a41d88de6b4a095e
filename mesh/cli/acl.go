package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/vmesh/vmesh/acl"
)

// aclCommand is `vmesh acl`: Consul's ACL commands (bootstrap, token,
// policy, role), each leaf with its own flags, against the agent's ACL
// HTTP API, which has Consul's paths and shapes.
type aclCommand struct{ env *Env }

// aclVerbs are the leaves under token, policy and role.
var aclVerbs = map[string]map[string]func(*Env) Command{
	"token": {
		"create": newACLTokenCreate, "list": newACLTokenList, "read": newACLTokenRead,
		"update": newACLTokenUpdate, "delete": newACLTokenDelete, "clone": newACLTokenClone,
	},
	"policy": {
		"create": newACLPolicyCreate, "list": newACLPolicyList, "read": newACLPolicyRead,
		"update": newACLPolicyUpdate, "delete": newACLPolicyDelete,
	},
	"role": {
		"create": newACLRoleCreate, "list": newACLRoleList, "read": newACLRoleRead,
		"update": newACLRoleUpdate, "delete": newACLRoleDelete,
	},
}

func newACL(env *Env) Command { return &aclCommand{env: env} }

func (c *aclCommand) Synopsis() string {
	return "bootstrap ACLs; create, read, update and delete tokens, policies and roles"
}

func (c *aclCommand) Help() string {
	return `usage: vmesh acl bootstrap [flags]
       vmesh acl token create | list | read | update | delete | clone [flags]
       vmesh acl policy create | list | read | update | delete [flags]
       vmesh acl role create | list | read | update | delete [flags]

Consul's ACL commands, against the local agent's ACL API. Each one has
its own flags: 'vmesh acl token create -h' shows them. Results print as
a block of fields, or with -format json as the agent's JSON.

Every command sends the ACL token from the first of -token, -token-file,
` + TokenEnv + `, ` + TokenFileEnv + `, ` + ConsulTokenEnv + ` and
` + ConsulTokenFileEnv + ` that is set. -token shows in ps: prefer a
file of mode 0600 or the environment.

IDs (-id, -policy-id, -role-id) may be given as a unique prefix of at
least one character; the command lists the kind to find the whole ID.
`
}

func (c *aclCommand) Run(ctx context.Context, args []string) int {
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(c.env.Stderr, "vmesh acl: %s\n\n%s", fmt.Sprintf(format, a...), c.Help())
		return ExitUsage
	}
	if len(args) == 0 {
		return usageErr("want bootstrap, token, policy or role")
	}
	kind, args := args[0], args[1:]
	if kind == "bootstrap" {
		return newACLBootstrap(c.env).Run(ctx, args)
	}
	verbs, ok := aclVerbs[kind]
	if !ok {
		return usageErr("unknown subcommand %q: want bootstrap, token, policy or role", kind)
	}
	names := make([]string, 0, len(verbs))
	for v := range verbs {
		names = append(names, v)
	}
	sort.Strings(names)
	if len(args) == 0 {
		return usageErr("want acl %s %s", kind, orList(names))
	}
	if isHelpFlag(args[0]) {
		fmt.Fprint(c.env.Stdout, c.Help())
		return ExitOK
	}
	mk, ok := verbs[args[0]]
	if !ok {
		return usageErr("unknown subcommand %q: want acl %s %s", args[0], kind, orList(names))
	}
	return mk(c.env).Run(ctx, args[1:])
}

// orList is "a, b or c".
func orList(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// aclLeaf is one ACL command (acl token create, ...): its flags, the
// agent's address and token, the output format, and run, which does the
// work with a client whose token is resolved.
type aclLeaf struct {
	*Flags
	http   *httpFlags
	format *string
	run    func(ctx context.Context, api *apiClient) int
}

// newACLLeaf makes the command name; build adds its flags and returns
// its run. withFormat adds -format.
func newACLLeaf(env *Env, name, usage, about string, withFormat bool, build func(l *aclLeaf) func(context.Context, *apiClient) int) Command {
	l := &aclLeaf{Flags: NewFlags(env, name, usage, about)}
	if withFormat {
		l.format = l.FS.String("format", "pretty", "output `format`: pretty or json")
	}
	l.run = build(l)
	l.http = l.clientFlags()
	return l
}

func (l *aclLeaf) Synopsis() string { return l.usage }

func (l *aclLeaf) Run(ctx context.Context, args []string) int {
	pos, code, done := l.Parse(args)
	if done {
		return code
	}
	if len(pos) > 0 {
		return l.UsageError("unexpected argument %q", pos[0])
	}
	if l.format != nil && *l.format != "pretty" && *l.format != "json" {
		return l.UsageError("-format %q: want pretty or json", *l.format)
	}
	api, code := l.http.client()
	if api == nil {
		return code
	}
	return l.run(ctx, api)
}

// given reports whether the flag was on the command line, so an empty
// -description can clear one.
func (l *aclLeaf) given(name string) bool {
	set := false
	l.FS.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// fail prints a failure (the agent refused, or could not be reached) and
// returns ExitFailed.
func (l *aclLeaf) fail(err error) int {
	fmt.Fprintf(l.env.Stderr, "vmesh %s: %v\n", l.name, err)
	return ExitFailed
}

// usage prints a usage mistake without the help (it names the flag) and
// returns ExitUsage.
func (l *aclLeaf) usageErr(format string, a ...any) int {
	fmt.Fprintf(l.env.Stderr, "vmesh %s: %s\n", l.name, fmt.Sprintf(format, a...))
	return ExitUsage
}

// invalid reports a body the agent would refuse, before sending it.
func (l *aclLeaf) invalid(err error) int {
	return l.usageErr("%s", strings.ReplaceAll(err.Error(), "\n", "; "))
}

// show prints the agent's answer raw: as indented JSON with -format json
// (every field the agent sent, in its order), or decoded into v and
// rendered by pretty.
func (l *aclLeaf) show(raw json.RawMessage, v any, pretty func() string) int {
	if err := json.Unmarshal(raw, v); err != nil {
		return l.fail(fmt.Errorf("decoding the agent's answer: %w", err))
	}
	if *l.format == "json" {
		var b bytes.Buffer
		if err := json.Indent(&b, raw, "", "    "); err != nil {
			return l.fail(fmt.Errorf("decoding the agent's answer: %w", err))
		}
		b.WriteByte('\n')
		l.env.Stdout.Write(b.Bytes())
		return ExitOK
	}
	fmt.Fprint(l.env.Stdout, pretty())
	return ExitOK
}

// call sends a request and keeps the answer raw for show.
func call(ctx context.Context, api *apiClient, method, path string, body any) (json.RawMessage, error) {
	var raw json.RawMessage
	err := api.do(ctx, method, path, body, &raw)
	return raw, err
}

// aclKind is what the ID prefix lookup needs of a kind: its list and
// built-in names Consul's CLI takes in place of an ID.
type aclKind struct {
	name, list string
	builtin    map[string]string
}

var (
	tokenKind  = aclKind{"token", "/v1/acl/tokens", map[string]string{"anonymous": acl.AnonymousAccessorID}}
	policyKind = aclKind{"policy", "/v1/acl/policies", map[string]string{acl.ManagementPolicyName: acl.ManagementPolicyID}}
	roleKind   = aclKind{"role", "/v1/acl/roles", nil}
)

// uuidLen is the length of a whole ID; a shorter one is a prefix.
const uuidLen = 36

// resolveID turns a unique prefix of an ID into the ID, as Consul's CLI
// does: a whole ID is taken as it is, a prefix is looked up in the list.
func resolveID(ctx context.Context, api *apiClient, k aclKind, partial string) (string, error) {
	if id, ok := k.builtin[partial]; ok {
		return id, nil
	}
	if len(partial) >= uuidLen {
		return partial, nil
	}
	var list []struct{ ID, AccessorID string }
	if err := api.do(ctx, http.MethodGet, k.list, nil, &list); err != nil {
		return "", fmt.Errorf("listing %s IDs to find the one starting %q: %w", k.name, partial, err)
	}
	var found []string
	for _, e := range list {
		id := e.ID
		if k.name == "token" {
			id = e.AccessorID
		}
		if strings.HasPrefix(id, partial) {
			found = append(found, id)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no %s ID starts with %q", k.name, partial)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("%d %s IDs start with %q; give more of the ID", len(found), k.name, partial)
}

// pathID is prefix with the ID escaped into it, as one path segment.
func pathID(prefix, id string) string { return prefix + url.PathEscape(id) }

// escapeSegments escapes a name for a path, keeping its slashes, as
// consul/api sends names (builtin/global-read-only) to /name/ routes.
func escapeSegments(name string) string {
	segs := strings.Split(name, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// links are the policy or role links of -policy-name/-policy-id
// (-role-...): names first, then IDs, as Consul's CLI sends them, each ID
// resolved from its prefix.
func links(ctx context.Context, api *apiClient, k aclKind, names, ids []string) ([]acl.Link, error) {
	var out []acl.Link
	for _, n := range names {
		out = append(out, acl.Link{Name: n})
	}
	for _, p := range ids {
		id, err := resolveID(ctx, api, k, p)
		if err != nil {
			return nil, err
		}
		out = append(out, acl.Link{ID: id})
	}
	return out, nil
}

// mergeLinks adds to cur the links it lacks (by ID, or by name for a link
// given by name).
func mergeLinks(cur, add []acl.Link) []acl.Link {
	for _, a := range add {
		dup := false
		for _, c := range cur {
			if (a.ID != "" && c.ID == a.ID) || (a.ID == "" && c.Name == a.Name) {
				dup = true
				break
			}
		}
		if !dup {
			cur = append(cur, a)
		}
	}
	return cur
}

// serviceIdentities parses -service-identity NAME or NAME:DC1,DC2.
func serviceIdentities(vals []string) ([]acl.ServiceIdentity, error) {
	var out []acl.ServiceIdentity
	for _, v := range vals {
		name, dcs, _ := strings.Cut(v, ":")
		name = strings.TrimSpace(name)
		if name == "" {
			return nil, fmt.Errorf("-service-identity %q: want NAME or NAME:DC1,DC2", v)
		}
		id := acl.ServiceIdentity{ServiceName: name}
		for _, dc := range strings.Split(dcs, ",") {
			if dc = strings.TrimSpace(dc); dc != "" {
				id.Datacenters = append(id.Datacenters, dc)
			}
		}
		out = append(out, id)
	}
	return out, nil
}

// nodeIdentities parses -node-identity NODE:DC.
func nodeIdentities(vals []string) ([]acl.NodeIdentity, error) {
	var out []acl.NodeIdentity
	for _, v := range vals {
		name, dc, _ := strings.Cut(v, ":")
		name, dc = strings.TrimSpace(name), strings.TrimSpace(dc)
		if name == "" || dc == "" {
			return nil, fmt.Errorf("-node-identity %q: want NODE:DATACENTER", v)
		}
		out = append(out, acl.NodeIdentity{NodeName: name, Datacenter: dc})
	}
	return out, nil
}

// mergeServiceIdentities replaces cur's identity of the same service or
// adds it, as Consul's role update does.
func mergeServiceIdentities(cur, add []acl.ServiceIdentity) []acl.ServiceIdentity {
	for _, a := range add {
		i := 0
		for i < len(cur) && cur[i].ServiceName != a.ServiceName {
			i++
		}
		if i < len(cur) {
			cur[i] = a
		} else {
			cur = append(cur, a)
		}
	}
	return cur
}

// mergeNodeIdentities adds the node identities cur lacks.
func mergeNodeIdentities(cur, add []acl.NodeIdentity) []acl.NodeIdentity {
	for _, a := range add {
		dup := false
		for _, c := range cur {
			dup = dup || c == a
		}
		if !dup {
			cur = append(cur, a)
		}
	}
	return cur
}

// The pretty blocks are Consul's, so that what an operator reads (and a
// script greps) is the same.

func writeLinks(b *strings.Builder, indent, title string, ls []acl.Link) {
	if len(ls) == 0 {
		return
	}
	fmt.Fprintf(b, "%s%s:\n", indent, title)
	for _, l := range ls {
		fmt.Fprintf(b, "%s   %s - %s\n", indent, l.ID, l.Name)
	}
}

func writeIdentities(b *strings.Builder, indent string, svcs []acl.ServiceIdentity, nodes []acl.NodeIdentity) {
	if len(svcs) > 0 {
		fmt.Fprintf(b, "%sService Identities:\n", indent)
		for _, s := range svcs {
			dcs := "all"
			if len(s.Datacenters) > 0 {
				dcs = strings.Join(s.Datacenters, ", ")
			}
			fmt.Fprintf(b, "%s   %s (Datacenters: %s)\n", indent, s.ServiceName, dcs)
		}
	}
	if len(nodes) > 0 {
		fmt.Fprintf(b, "%sNode Identities:\n", indent)
		for _, n := range nodes {
			fmt.Fprintf(b, "%s   %s (Datacenter: %s)\n", indent, n.NodeName, n.Datacenter)
		}
	}
}

func formatToken(t *acl.Token) string {
	var b strings.Builder
	fmt.Fprintf(&b, "AccessorID:       %s\n", t.AccessorID)
	fmt.Fprintf(&b, "SecretID:         %s\n", t.SecretID)
	fmt.Fprintf(&b, "Description:      %s\n", t.Description)
	fmt.Fprintf(&b, "Local:            %t\n", t.Local)
	fmt.Fprintf(&b, "Create Time:      %v\n", t.CreateTime)
	if t.ExpirationTime != nil && !t.ExpirationTime.IsZero() {
		fmt.Fprintf(&b, "Expiration Time:  %v\n", *t.ExpirationTime)
	}
	writeLinks(&b, "", "Policies", t.Policies)
	writeLinks(&b, "", "Roles", t.Roles)
	writeIdentities(&b, "", t.ServiceIdentities, t.NodeIdentities)
	return b.String()
}

func formatTokens(ts []acl.Token) string {
	blocks := make([]string, len(ts))
	for i := range ts {
		blocks[i] = formatToken(&ts[i])
	}
	return strings.Join(blocks, "\n")
}

func formatPolicy(p *acl.Policy) string {
	var b strings.Builder
	fmt.Fprintf(&b, "ID:           %s\n", p.ID)
	fmt.Fprintf(&b, "Name:         %s\n", p.Name)
	fmt.Fprintf(&b, "Description:  %s\n", p.Description)
	fmt.Fprintf(&b, "Datacenters:  %s\n", strings.Join(p.Datacenters, ", "))
	b.WriteString("Rules:\n")
	if p.Rules != "" {
		b.WriteString(strings.TrimRight(p.Rules, "\n") + "\n")
	}
	return b.String()
}

func formatPolicies(ps []acl.Policy) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "%s:\n", p.Name)
		fmt.Fprintf(&b, "   ID:           %s\n", p.ID)
		fmt.Fprintf(&b, "   Description:  %s\n", p.Description)
		fmt.Fprintf(&b, "   Datacenters:  %s\n", strings.Join(p.Datacenters, ", "))
	}
	return b.String()
}

func formatRole(r *acl.Role, indent string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%sID:           %s\n", indent, r.ID)
	if indent == "" {
		fmt.Fprintf(&b, "Name:         %s\n", r.Name)
	}
	fmt.Fprintf(&b, "%sDescription:  %s\n", indent, r.Description)
	writeLinks(&b, indent, "Policies", r.Policies)
	writeIdentities(&b, indent, r.ServiceIdentities, r.NodeIdentities)
	return b.String()
}

func formatRoles(rs []acl.Role) string {
	var b strings.Builder
	for i := range rs {
		fmt.Fprintf(&b, "%s:\n%s", rs[i].Name, formatRole(&rs[i], "   "))
	}
	return b.String()
}

// newACLBootstrap is `vmesh acl bootstrap`.
func newACLBootstrap(env *Env) Command {
	return newACLLeaf(env, "acl bootstrap", "vmesh acl bootstrap [flags]",
		`Creates the initial management token, once per cluster, and prints it:
its SecretID grants everything. Keep it in a file of mode 0600 (or a
secret store) and hand out narrower tokens made with 'vmesh acl token
create'.`, true,
		func(l *aclLeaf) func(context.Context, *apiClient) int {
			return func(ctx context.Context, api *apiClient) int {
				raw, err := call(ctx, api, http.MethodPut, "/v1/acl/bootstrap", nil)
				if err != nil {
					return l.fail(err)
				}
				var t acl.Token
				return l.show(raw, &t, func() string { return formatToken(&t) })
			}
		})
}
