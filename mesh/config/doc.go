// Package config owns the agent's configuration: Config and its blocks,
// DefaultConfig, one Validate that reports every problem, the strict
// HCL/JSON decoder (unknown keys are errors, with file:line:col), the
// loading of config files and directories, the agent's flags
// (AgentFlags.Register and Build) and the reading of service files, which
// decode into discovery.ServiceRegistration, the API's own shape, so that
// local.BuildFileServices validates files as the API validates bodies.
//
// It must not start anything, touch the kernel or talk to an agent: it
// turns files and flags into values and says what is wrong with them.
// It must not import mesh or cli, which both read it.
//
// Data enters as file paths and a parsed flag set; it leaves as a
// Config (with the service definitions found in its files, see
// ServiceFiles) or an error naming each bad key, file and line. Errors a
// subsystem finds later in the configuration are wrapped in Error so the
// agent exits with status 2.
package config
