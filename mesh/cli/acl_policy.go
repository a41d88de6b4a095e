package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/mesh/config"
)

// loadRules reads -rules as Consul's CLI does: @FILE is the file's text,
// anything else the rules themselves. The rules are parsed here, so a
// mistake is a usage error naming the file (or -rules) and the line
// before anything is sent.
func loadRules(v string) (string, error) {
	src, where := v, "-rules"
	if path, ok := strings.CutPrefix(v, "@"); ok {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("-rules: %w", err)
		}
		src, where = string(b), path
	}
	if _, err := acl.ParseRules(src); err != nil {
		lines := strings.Split(err.Error(), "\n")
		for i, l := range lines {
			lines[i] = where + ": " + l
		}
		return "", fmt.Errorf("%s", strings.Join(lines, "\n"))
	}
	return src, nil
}

// selectFlags are -id and -name, which pick the policy or role a
// command works on.
type selectFlags struct {
	kind     aclKind
	id, name *string
}

func addSelect(l *aclLeaf, k aclKind, nameUsage string) *selectFlags {
	return &selectFlags{
		kind: k,
		id:   l.FS.String("id", "", "the "+k.name+"'s `ID`, or a unique prefix of it"),
		name: l.FS.String("name", "", nameUsage),
	}
}

// check is the usage rule of read and delete: one of -id and -name.
func (s *selectFlags) check() string {
	if (*s.id == "") == (*s.name == "") {
		return "want -id ID or -name NAME"
	}
	return s.checkName()
}

// checkUpdate is update's: -id, -name or both (a rename).
func (s *selectFlags) checkUpdate() string {
	if *s.id == "" && *s.name == "" {
		return "want -id ID or -name NAME"
	}
	return s.checkName()
}

// checkName refuses a name that would climb out of the /name/ route
// once a server cleans the path; no valid name has a dot.
func (s *selectFlags) checkName() string {
	for _, seg := range strings.Split(*s.name, "/") {
		if seg == "." || seg == ".." {
			return fmt.Sprintf("-name %q is not a %s name", *s.name, s.kind.name)
		}
	}
	return ""
}

// read fetches the object -id or, without it, -name picks into out.
func (s *selectFlags) read(ctx context.Context, api *apiClient, out any) error {
	path := "/v1/acl/" + s.kind.name + "/name/" + escapeSegments(*s.name)
	if *s.id != "" {
		id, err := resolveID(ctx, api, s.kind, *s.id)
		if err != nil {
			return err
		}
		path = pathID("/v1/acl/"+s.kind.name+"/", id)
	}
	return api.do(ctx, http.MethodGet, path, nil, out)
}

func newACLPolicyCreate(env *Env) Command {
	return newACLLeaf(env, "acl policy create", "vmesh acl policy create -name NAME [-rules @FILE | -rules RULES] [flags]",
		`Creates a policy. -rules @FILE reads the rules from FILE; otherwise
-rules is the rules themselves, in HCL or JSON:

  service_prefix "" { policy = "read" }
  service "web" { policy = "write" }

The rules are checked before they are sent.`, true,
		func(l *aclLeaf) func(context.Context, *apiClient) int {
			name := l.FS.String("name", "", "the policy's `name` (required)")
			desc := l.FS.String("description", "", "a `description` of the policy")
			rules := l.FS.String("rules", "", "the policy's rules, or @`FILE` to read them from FILE")
			var dcs config.StringList
			l.FS.Var(&dcs, "valid-datacenter", "a `datacenter` the policy applies in (default all); repeatable")
			return func(ctx context.Context, api *apiClient) int {
				if *name == "" {
					return l.UsageError("want -name NAME")
				}
				src, err := loadRules(*rules)
				if err != nil {
					return l.usageErr("%v", err)
				}
				p := acl.Policy{Name: *name, Description: *desc, Rules: src, Datacenters: dcs}
				if err := p.Validate(); err != nil {
					return l.invalid(err)
				}
				raw, err := call(ctx, api, http.MethodPut, "/v1/acl/policy", &p)
				if err != nil {
					return l.fail(err)
				}
				var out acl.Policy
				return l.show(raw, &out, func() string { return formatPolicy(&out) })
			}
		})
}

func newACLPolicyList(env *Env) Command {
	return newACLLeaf(env, "acl policy list", "vmesh acl policy list [flags]",
		`Lists every policy (without its rules: read one to see them).`, true,
		func(l *aclLeaf) func(context.Context, *apiClient) int {
			return func(ctx context.Context, api *apiClient) int {
				raw, err := call(ctx, api, http.MethodGet, "/v1/acl/policies", nil)
				if err != nil {
					return l.fail(err)
				}
				var ps []acl.Policy
				return l.show(raw, &ps, func() string { return formatPolicies(ps) })
			}
		})
}

func newACLPolicyRead(env *Env) Command {
	return newACLLeaf(env, "acl policy read", "vmesh acl policy read -id ID | -name NAME [flags]",
		`Prints a policy with its rules.`, true,
		func(l *aclLeaf) func(context.Context, *apiClient) int {
			sel := addSelect(l, policyKind, "the policy's `name`")
			return func(ctx context.Context, api *apiClient) int {
				if msg := sel.check(); msg != "" {
					return l.UsageError("%s", msg)
				}
				var raw json.RawMessage
				if err := sel.read(ctx, api, &raw); err != nil {
					return l.fail(err)
				}
				var p acl.Policy
				return l.show(raw, &p, func() string { return formatPolicy(&p) })
			}
		})
}

func newACLPolicyUpdate(env *Env) Command {
	return newACLLeaf(env, "acl policy update", "vmesh acl policy update -id ID | -name NAME [flags]",
		`Changes a policy: reads it, applies the flags and writes it back. With
-id, -name renames the policy; without -id, -name picks it. Fields not
given are kept.`, true,
		func(l *aclLeaf) func(context.Context, *apiClient) int {
			sel := addSelect(l, policyKind, "the policy's `name`: the new name with -id, else the policy to update")
			desc := l.FS.String("description", "", "the policy's new `description`")
			rules := l.FS.String("rules", "", "the policy's new rules, or @`FILE` to read them from FILE")
			var dcs config.StringList
			l.FS.Var(&dcs, "valid-datacenter", "a `datacenter` the policy applies in, replacing the list; repeatable")
			return func(ctx context.Context, api *apiClient) int {
				if msg := sel.checkUpdate(); msg != "" {
					return l.UsageError("%s", msg)
				}
				var src string
				if l.given("rules") {
					var err error
					if src, err = loadRules(*rules); err != nil {
						return l.usageErr("%v", err)
					}
				}
				var p acl.Policy
				if err := sel.read(ctx, api, &p); err != nil {
					return l.fail(fmt.Errorf("reading the policy: %w", err))
				}
				if *sel.id != "" && *sel.name != "" {
					p.Name = *sel.name
				}
				if l.given("description") {
					p.Description = *desc
				}
				if l.given("rules") {
					p.Rules = src
				}
				if len(dcs) > 0 {
					p.Datacenters = dcs
				}
				if err := p.Validate(); err != nil {
					return l.invalid(err)
				}
				raw, err := call(ctx, api, http.MethodPut, pathID("/v1/acl/policy/", p.ID), &p)
				if err != nil {
					return l.fail(err)
				}
				var out acl.Policy
				return l.show(raw, &out, func() string { return formatPolicy(&out) })
			}
		})
}

func newACLPolicyDelete(env *Env) Command {
	return newACLLeaf(env, "acl policy delete", "vmesh acl policy delete -id ID | -name NAME [flags]",
		`Deletes a policy; tokens and roles that link it lose what it granted.`, false,
		func(l *aclLeaf) func(context.Context, *apiClient) int {
			sel := addSelect(l, policyKind, "the policy's `name`")
			return func(ctx context.Context, api *apiClient) int {
				return deleteSelected(ctx, l, api, sel, "Policy")
			}
		})
}

// deleteSelected deletes the policy or role sel picks: by ID, or by the
// ID its name reads to.
func deleteSelected(ctx context.Context, l *aclLeaf, api *apiClient, sel *selectFlags, what string) int {
	if msg := sel.check(); msg != "" {
		return l.UsageError("%s", msg)
	}
	var id string
	if *sel.id != "" {
		var err error
		if id, err = resolveID(ctx, api, sel.kind, *sel.id); err != nil {
			return l.fail(err)
		}
	} else {
		var cur struct{ ID string }
		if err := sel.read(ctx, api, &cur); err != nil {
			return l.fail(err)
		}
		id = cur.ID
	}
	if err := api.do(ctx, http.MethodDelete, pathID("/v1/acl/"+sel.kind.name+"/", id), nil, nil); err != nil {
		return l.fail(err)
	}
	fmt.Fprintf(l.env.Stdout, "%s %q deleted successfully\n", what, id)
	return ExitOK
}
