package config

import (
	"fmt"
	"strings"

	"github.com/vmesh/vmesh/acl"
)

// ACLConfig is Consul's acl block. ACLs are on, deny by default, unless
// the agent runs with -dev or the config turns them off.
type ACLConfig struct {
	// Enabled: nil means the default (on, off under -dev).
	Enabled       *bool  `hcl:"enabled"`
	DefaultPolicy string `hcl:"default_policy"`
	// EnableTokenPersistence keeps the tokens set through PUT
	// /v1/agent/token/:kind in the data dir (acl-tokens.json, 0600) and
	// reads them back at start, as Consul's; off, a restart returns to
	// the config file's tokens.
	EnableTokenPersistence bool      `hcl:"enable_token_persistence"`
	Tokens                 ACLTokens `hcl:"tokens"`
}

// ACLTokens are the tokens an agent is configured with.
type ACLTokens struct {
	// InitialManagement is the secret of a management token a server
	// creates when ACLs are bootstrapped for the first time (instead of
	// PUT /v1/acl/bootstrap).
	InitialManagement string `hcl:"initial_management"`
	// Agent goes with the agent's own writes (its node, service files,
	// check results), which the leader then checks against it on top of
	// the node certificate.
	Agent string `hcl:"agent"`
	// Default is the token of requests that carry none (and of DNS);
	// empty: the anonymous token.
	Default string `hcl:"default"`
}

// ACLEnabled says whether this agent enforces ACLs.
func (c *Config) ACLEnabled() bool {
	if c.ACL.Enabled != nil {
		return *c.ACL.Enabled
	}
	return !c.Dev
}

// ACLDefaultPolicy is acl.default_policy, deny when unset.
func (c *Config) ACLDefaultPolicy() acl.DefaultPolicy {
	if c.ACL.DefaultPolicy == "" {
		return acl.DefaultDeny
	}
	p, _ := acl.ParseDefaultPolicy(strings.ToLower(c.ACL.DefaultPolicy))
	return p
}

func (c *Config) validateACL() []error {
	var errs []error
	if c.ACL.DefaultPolicy != "" {
		if _, err := acl.ParseDefaultPolicy(strings.ToLower(c.ACL.DefaultPolicy)); err != nil {
			errs = append(errs, fmt.Errorf("acl.default_policy: %q is not allow or deny", c.ACL.DefaultPolicy))
		}
	}
	for _, t := range []struct{ key, v string }{
		{"acl.tokens.initial_management", c.ACL.Tokens.InitialManagement},
		{"acl.tokens.default", c.ACL.Tokens.Default},
	} {
		if t.v != "" && strings.TrimSpace(t.v) != t.v {
			errs = append(errs, fmt.Errorf("%s: must not have surrounding white space", t.key))
		}
	}
	return errs
}
