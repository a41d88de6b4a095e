package cli

import (
	"context"
	"fmt"
	"net/http"

	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/mesh/config"
)

// tokenFields are the flags token create and update share: what a token
// grants and its description.
type tokenFields struct {
	description                          *string
	policyIDs, policyNames               config.StringList
	roleIDs, roleNames                   config.StringList
	serviceIdentities, nodeIdentitiesArg config.StringList
}

func addTokenFields(l *aclLeaf) *tokenFields {
	f := &tokenFields{}
	f.description = l.FS.String("description", "", "a `description` of the token")
	l.FS.Var(&f.policyNames, "policy-name", "link the policy of this `name`; repeatable")
	l.FS.Var(&f.policyIDs, "policy-id", "link the policy of this `ID` (or unique ID prefix); repeatable")
	l.FS.Var(&f.roleNames, "role-name", "link the role of this `name`; repeatable")
	l.FS.Var(&f.roleIDs, "role-id", "link the role of this `ID` (or unique ID prefix); repeatable")
	l.FS.Var(&f.serviceIdentities, "service-identity", "grant what service `NAME[:DC1,DC2]` and its sidecar need; repeatable")
	l.FS.Var(&f.nodeIdentitiesArg, "node-identity", "grant what the agent of `NODE:DC` needs; repeatable")
	return f
}

// parsed returns the identities and links the flags give, resolving ID
// prefixes through the agent. A malformed identity is a usage error
// (usage true).
func (f *tokenFields) parsed(ctx context.Context, api *apiClient) (t acl.Token, usage bool, err error) {
	if t.ServiceIdentities, err = serviceIdentities(f.serviceIdentities); err != nil {
		return t, true, err
	}
	if t.NodeIdentities, err = nodeIdentities(f.nodeIdentitiesArg); err != nil {
		return t, true, err
	}
	if t.Policies, err = links(ctx, api, policyKind, f.policyNames, f.policyIDs); err != nil {
		return t, false, err
	}
	if t.Roles, err = links(ctx, api, roleKind, f.roleNames, f.roleIDs); err != nil {
		return t, false, err
	}
	return t, false, nil
}

// tokenID adds -id and its Consul name -accessor-id.
func tokenID(l *aclLeaf) *string {
	id := l.FS.String("id", "", "the token's `AccessorID`, or a unique prefix of it")
	l.FS.StringVar(id, "accessor-id", "", "the same as -id (Consul's name for it): the token's `AccessorID`")
	return id
}

func newACLTokenCreate(env *Env) Command {
	return newACLLeaf(env, "acl token create", "vmesh acl token create [flags]",
		`Creates a token and prints it, SecretID included. Without -secret and
-accessor the agent makes both up. A token with neither policies, roles
nor identities grants only what the anonymous token's default allows.`, true,
		func(l *aclLeaf) func(context.Context, *apiClient) int {
			f := addTokenFields(l)
			ttl := l.FS.Duration("expires-ttl", 0, "the token expires after this `duration` (e.g. 24h; default never)")
			secret := l.FS.String("secret", "", "create the token with this SecretID (a UUID; visible in ps)")
			accessor := l.FS.String("accessor", "", "create the token with this AccessorID (a UUID)")
			local := l.FS.Bool("local", false, "a token of this datacenter only")
			return func(ctx context.Context, api *apiClient) int {
				if *secret != "" {
					fmt.Fprintf(l.env.Stderr, "vmesh %s: warning: -secret puts the new token's secret in argv, where ps shows it to every user of this host\n", l.name)
				}
				t, usage, err := f.parsed(ctx, api)
				if usage {
					return l.usageErr("%v", err)
				}
				if err != nil {
					return l.fail(err)
				}
				t.Description, t.SecretID, t.AccessorID, t.Local, t.ExpirationTTL = *f.description, *secret, *accessor, *local, *ttl
				if err := t.Validate(); err != nil {
					return l.invalid(err)
				}
				raw, err := call(ctx, api, http.MethodPut, "/v1/acl/token", &t)
				if err != nil {
					return l.fail(err)
				}
				var out acl.Token
				return l.show(raw, &out, func() string { return formatToken(&out) })
			}
		})
}

func newACLTokenList(env *Env) Command {
	return newACLLeaf(env, "acl token list", "vmesh acl token list [flags]",
		`Lists every token the caller may read.`, true,
		func(l *aclLeaf) func(context.Context, *apiClient) int {
			return func(ctx context.Context, api *apiClient) int {
				raw, err := call(ctx, api, http.MethodGet, "/v1/acl/tokens", nil)
				if err != nil {
					return l.fail(err)
				}
				var ts []acl.Token
				return l.show(raw, &ts, func() string { return formatTokens(ts) })
			}
		})
}

func newACLTokenRead(env *Env) Command {
	return newACLLeaf(env, "acl token read", "vmesh acl token read -id ID | -self [flags]",
		`Prints a token: the one -id names, or with -self the one this command
sends (-token, -token-file or the environment).`, true,
		func(l *aclLeaf) func(context.Context, *apiClient) int {
			id := tokenID(l)
			self := l.FS.Bool("self", false, "read the token this command sends")
			return func(ctx context.Context, api *apiClient) int {
				if (*id == "") == !*self {
					return l.UsageError("want -id ID or -self")
				}
				path := "/v1/acl/token/self"
				if !*self {
					full, err := resolveID(ctx, api, tokenKind, *id)
					if err != nil {
						return l.fail(err)
					}
					path = pathID("/v1/acl/token/", full)
				}
				raw, err := call(ctx, api, http.MethodGet, path, nil)
				if err != nil {
					return l.fail(err)
				}
				var t acl.Token
				return l.show(raw, &t, func() string { return formatToken(&t) })
			}
		})
}

func newACLTokenUpdate(env *Env) Command {
	return newACLLeaf(env, "acl token update", "vmesh acl token update -id ID [flags]",
		`Changes a token: reads it, applies the flags and writes it back. Policies,
roles and identities given replace the token's (with -merge-... they are
added to them); those not given are kept, as is the description unless
-description is given. Its secret, expiry and locality never change.`, true,
		func(l *aclLeaf) func(context.Context, *apiClient) int {
			id := tokenID(l)
			f := addTokenFields(l)
			mergePolicies := l.FS.Bool("merge-policies", false, "add -policy-name/-policy-id to the token's policies instead of replacing them")
			mergeRoles := l.FS.Bool("merge-roles", false, "add -role-name/-role-id to the token's roles instead of replacing them")
			mergeSvcs := l.FS.Bool("merge-service-identities", false, "add -service-identity to the token's instead of replacing them")
			mergeNodes := l.FS.Bool("merge-node-identities", false, "add -node-identity to the token's instead of replacing them")
			return func(ctx context.Context, api *apiClient) int {
				if *id == "" {
					return l.UsageError("want -id ID")
				}
				add, usage, err := f.parsed(ctx, api)
				if usage {
					return l.usageErr("%v", err)
				}
				if err != nil {
					return l.fail(err)
				}
				full, err := resolveID(ctx, api, tokenKind, *id)
				if err != nil {
					return l.fail(err)
				}
				var t acl.Token
				if err := api.do(ctx, http.MethodGet, pathID("/v1/acl/token/", full), nil, &t); err != nil {
					return l.fail(fmt.Errorf("reading the token: %w", err))
				}
				if l.given("description") {
					t.Description = *f.description
				}
				t.Policies = update(t.Policies, add.Policies, *mergePolicies, mergeLinks)
				t.Roles = update(t.Roles, add.Roles, *mergeRoles, mergeLinks)
				t.ServiceIdentities = update(t.ServiceIdentities, add.ServiceIdentities, *mergeSvcs, mergeServiceIdentities)
				t.NodeIdentities = update(t.NodeIdentities, add.NodeIdentities, *mergeNodes, mergeNodeIdentities)
				// The secret stays the agent's: an update without one keeps it,
				// and the secret need not travel again.
				t.SecretID, t.ExpirationTTL = "", 0
				if err := t.Validate(); err != nil {
					return l.invalid(err)
				}
				raw, err := call(ctx, api, http.MethodPut, pathID("/v1/acl/token/", full), &t)
				if err != nil {
					return l.fail(err)
				}
				var out acl.Token
				return l.show(raw, &out, func() string { return formatToken(&out) })
			}
		})
}

// update is what an update flag does to a list: nothing when not given,
// else replace it, or merge into it.
func update[T any](cur, given []T, merge bool, mergeFn func(cur, add []T) []T) []T {
	switch {
	case len(given) == 0:
		return cur
	case merge:
		return mergeFn(cur, given)
	}
	return given
}

func newACLTokenDelete(env *Env) Command {
	return newACLLeaf(env, "acl token delete", "vmesh acl token delete -id ID [flags]",
		`Deletes a token: its secret admits no one from then on.`, false,
		func(l *aclLeaf) func(context.Context, *apiClient) int {
			id := tokenID(l)
			return func(ctx context.Context, api *apiClient) int {
				if *id == "" {
					return l.UsageError("want -id ID")
				}
				full, err := resolveID(ctx, api, tokenKind, *id)
				if err != nil {
					return l.fail(err)
				}
				if err := api.do(ctx, http.MethodDelete, pathID("/v1/acl/token/", full), nil, nil); err != nil {
					return l.fail(err)
				}
				fmt.Fprintf(l.env.Stdout, "Token %q deleted successfully\n", full)
				return ExitOK
			}
		})
}

func newACLTokenClone(env *Env) Command {
	return newACLLeaf(env, "acl token clone", "vmesh acl token clone -id ID [-description D] [flags]",
		`Creates a token with the same policies, roles and identities as the
token -id names, and a new AccessorID and SecretID. It keeps the
original's description unless -description is given.`, true,
		func(l *aclLeaf) func(context.Context, *apiClient) int {
			id := tokenID(l)
			desc := l.FS.String("description", "", "the clone's `description`")
			return func(ctx context.Context, api *apiClient) int {
				if *id == "" {
					return l.UsageError("want -id ID")
				}
				full, err := resolveID(ctx, api, tokenKind, *id)
				if err != nil {
					return l.fail(err)
				}
				body := map[string]string{}
				if *desc != "" {
					body["Description"] = *desc
				}
				raw, err := call(ctx, api, http.MethodPut, pathID("/v1/acl/token/", full)+"/clone", body)
				if err != nil {
					return l.fail(err)
				}
				var out acl.Token
				return l.show(raw, &out, func() string { return formatToken(&out) })
			}
		})
}
