package config

import (
	"fmt"

	"github.com/vmesh/vmesh/discovery/checks"
)

// ChecksConfig is the `checks { ... }` block: what the agent's health
// checks may do.
type ChecksConfig struct {
	// AllowAgentTargets lets HTTP, TCP and gRPC checks probe the agent's
	// own listeners (its HTTP API, admin, xDS, cluster and DNS ports, the
	// proxy's listeners), which are refused by default: a check runs from
	// this host and publishes what it read.
	AllowAgentTargets bool `hcl:"allow_agent_targets"`
	// OutputMaxSize caps a check's stored output in bytes (Consul's
	// check_output_max_size; default 4096).
	OutputMaxSize int `hcl:"output_max_size"`
}

func defaultChecksConfig() ChecksConfig {
	return ChecksConfig{OutputMaxSize: checks.DefaultOutputMax}
}

func (c *Config) validateChecks() []error {
	var errs []error
	if c.Checks.OutputMaxSize < 1 {
		errs = append(errs, fmt.Errorf("checks.output_max_size: must be at least 1 byte, got %d", c.Checks.OutputMaxSize))
	}
	if c.CheckUpdateInterval < 0 {
		errs = append(errs, fmt.Errorf("check_update_interval: must not be negative, got %s", c.CheckUpdateInterval))
	}
	return errs
}

// defaultCheckUpdateInterval is Consul's check_update_interval default.
const defaultCheckUpdateInterval = checks.DefaultUpdateInterval
