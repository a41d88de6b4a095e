package config

import (
	"fmt"

	"github.com/vmesh/vmesh/discovery"
)

// intentions_default values. Unset means deny (the production default);
// -dev makes it allow unless a config file says otherwise, so a laptop
// works out of the box.
const (
	IntentionsAllow = discovery.IntentionActionAllow
	IntentionsDeny  = discovery.IntentionActionDeny
)

// IntentionsDefaultAllow reports whether a connection that no intention
// matches is allowed. Consul keeps this default in its ACL config; vmesh
// keeps it in each agent's config, which decides for the proxy it feeds
// (the inbound RBAC) and for /v1/connect/intentions/check. Every agent
// should have the same value, or a connection's fate depends on which
// host it enters.
func (c *Config) IntentionsDefaultAllow() bool {
	return c.IntentionsDefault == IntentionsAllow
}

func (c *Config) validateIntentions() []error {
	switch c.IntentionsDefault {
	case "", IntentionsAllow, IntentionsDeny:
		return nil
	}
	return []error{fmt.Errorf("intentions_default: %q is not allow or deny", c.IntentionsDefault)}
}
