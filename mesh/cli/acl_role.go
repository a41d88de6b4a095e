package cli

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/mesh/config"
)

// roleFields are the flags role create and update share: the policies
// and identities a role grants.
type roleFields struct {
	policyIDs, policyNames config.StringList
	services, nodes        config.StringList
}

func addRoleFields(l *aclLeaf) *roleFields {
	f := &roleFields{}
	l.FS.Var(&f.policyNames, "policy-name", "link the policy of this `name`; repeatable")
	l.FS.Var(&f.policyIDs, "policy-id", "link the policy of this `ID` (or unique ID prefix); repeatable")
	l.FS.Var(&f.services, "service-identity", "grant what service `NAME[:DC1,DC2]` and its sidecar need; repeatable")
	l.FS.Var(&f.nodes, "node-identity", "grant what the agent of `NODE:DC` needs; repeatable")
	return f
}

// parsed is parsed's (tokenFields) twin for a role.
func (f *roleFields) parsed(ctx context.Context, api *apiClient) (r acl.Role, usage bool, err error) {
	if r.ServiceIdentities, err = serviceIdentities(f.services); err != nil {
		return r, true, err
	}
	if r.NodeIdentities, err = nodeIdentities(f.nodes); err != nil {
		return r, true, err
	}
	if r.Policies, err = links(ctx, api, policyKind, f.policyNames, f.policyIDs); err != nil {
		return r, false, err
	}
	return r, false, nil
}

func newACLRoleCreate(env *Env) Command {
	return newACLLeaf(env, "acl role create", "vmesh acl role create -name NAME [flags]",
		`Creates a role: a named set of policies and identities that tokens link
with -role-name or -role-id.`, true,
		func(l *aclLeaf) func(context.Context, *apiClient) int {
			name := l.FS.String("name", "", "the role's `name` (required)")
			desc := l.FS.String("description", "", "a `description` of the role")
			f := addRoleFields(l)
			return func(ctx context.Context, api *apiClient) int {
				if *name == "" {
					return l.UsageError("want -name NAME")
				}
				r, usage, err := f.parsed(ctx, api)
				if usage {
					return l.usageErr("%v", err)
				}
				if err != nil {
					return l.fail(err)
				}
				r.Name, r.Description = *name, *desc
				if err := r.Validate(); err != nil {
					return l.invalid(err)
				}
				raw, err := call(ctx, api, http.MethodPut, "/v1/acl/role", &r)
				if err != nil {
					return l.fail(err)
				}
				var out acl.Role
				return l.show(raw, &out, func() string { return formatRole(&out, "") })
			}
		})
}

func newACLRoleList(env *Env) Command {
	return newACLLeaf(env, "acl role list", "vmesh acl role list [flags]",
		`Lists every role with its policies and identities.`, true,
		func(l *aclLeaf) func(context.Context, *apiClient) int {
			return func(ctx context.Context, api *apiClient) int {
				raw, err := call(ctx, api, http.MethodGet, "/v1/acl/roles", nil)
				if err != nil {
					return l.fail(err)
				}
				var rs []acl.Role
				return l.show(raw, &rs, func() string { return formatRoles(rs) })
			}
		})
}

func newACLRoleRead(env *Env) Command {
	return newACLLeaf(env, "acl role read", "vmesh acl role read -id ID | -name NAME [flags]",
		`Prints a role.`, true,
		func(l *aclLeaf) func(context.Context, *apiClient) int {
			sel := addSelect(l, roleKind, "the role's `name`")
			return func(ctx context.Context, api *apiClient) int {
				if msg := sel.check(); msg != "" {
					return l.UsageError("%s", msg)
				}
				var raw json.RawMessage
				if err := sel.read(ctx, api, &raw); err != nil {
					return l.fail(err)
				}
				var r acl.Role
				return l.show(raw, &r, func() string { return formatRole(&r, "") })
			}
		})
}

func newACLRoleUpdate(env *Env) Command {
	return newACLLeaf(env, "acl role update", "vmesh acl role update -id ID | -name NAME [flags]",
		`Changes a role: reads it, applies the flags and writes it back. With -id,
-name renames the role; without -id, -name picks it. As Consul's, policies
and identities given are added to the role's (an identity of the same
service replaces the old one); -no-merge replaces them instead. The
description is kept unless -description is given.`, true,
		func(l *aclLeaf) func(context.Context, *apiClient) int {
			sel := addSelect(l, roleKind, "the role's `name`: the new name with -id, else the role to update")
			desc := l.FS.String("description", "", "the role's new `description`")
			f := addRoleFields(l)
			noMerge := l.FS.Bool("no-merge", false, "replace the role's policies and identities with the ones given")
			return func(ctx context.Context, api *apiClient) int {
				if msg := sel.checkUpdate(); msg != "" {
					return l.UsageError("%s", msg)
				}
				add, usage, err := f.parsed(ctx, api)
				if usage {
					return l.usageErr("%v", err)
				}
				if err != nil {
					return l.fail(err)
				}
				var r acl.Role
				if err := sel.read(ctx, api, &r); err != nil {
					return l.fail(err)
				}
				if *sel.id != "" && *sel.name != "" {
					r.Name = *sel.name
				}
				if l.given("description") {
					r.Description = *desc
				}
				if *noMerge {
					r.Policies, r.ServiceIdentities, r.NodeIdentities = add.Policies, add.ServiceIdentities, add.NodeIdentities
				} else {
					r.Policies = mergeLinks(r.Policies, add.Policies)
					r.ServiceIdentities = mergeServiceIdentities(r.ServiceIdentities, add.ServiceIdentities)
					r.NodeIdentities = mergeNodeIdentities(r.NodeIdentities, add.NodeIdentities)
				}
				if err := r.Validate(); err != nil {
					return l.invalid(err)
				}
				raw, err := call(ctx, api, http.MethodPut, pathID("/v1/acl/role/", r.ID), &r)
				if err != nil {
					return l.fail(err)
				}
				var out acl.Role
				return l.show(raw, &out, func() string { return formatRole(&out, "") })
			}
		})
}

func newACLRoleDelete(env *Env) Command {
	return newACLLeaf(env, "acl role delete", "vmesh acl role delete -id ID | -name NAME [flags]",
		`Deletes a role; tokens that link it lose what it granted.`, false,
		func(l *aclLeaf) func(context.Context, *apiClient) int {
			sel := addSelect(l, roleKind, "the role's `name`")
			return func(ctx context.Context, api *apiClient) int {
				return deleteSelected(ctx, l, api, sel, "Role")
			}
		})
}
