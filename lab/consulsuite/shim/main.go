//go:build linux

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// consulVersion is the Consul version the shim claims: sdk/testutil reads
// it to decide which ports to allocate (>= 1.14 adds grpc_tls).
const consulVersion = "1.22.0"

// testConfig is the part of sdk/testutil's TestServerConfig the shim maps
// onto vmesh: node_name, node_id, node_meta, datacenter, data_dir,
// bind_addr, bootstrap, server, log_level, ports.http, ports.server (the
// cluster port), ports.dns, the acl block, connect's cluster_id (the
// trust domain) and enable_script_checks (vmesh's key of the same name). What it leaves out, and why:
//
//	key                         why it is not passed on
//	performance.raft_multiplier vmesh's raft timings are fixed
//	ports.https, grpc, grpc_tls vmesh serves no HTTPS API and no Consul gRPC
//	ports.serf_lan, serf_wan    vmesh has no serf; the cluster port does its work
//	                            (serf_wan is lent to the admin listener below)
//	segments, partition         Consul Enterprise
//	disable_update_check        vmesh never calls home
//	skip_leave_on_interrupt     vmesh never leaves on a signal; `vmesh leave` does
//	raft_protocol               vmesh speaks one raft protocol
//	acl_datacenter,
//	primary_datacenter          one datacenter
//	acl.tokens.agent_master,
//	acl.tokens.replication      no agent recovery token, no ACL replication
//	acl.enable_token_replication,
//	policy_ttl, token_ttl,
//	down_policy, disabled_ttl   no ACL replication, so no cache to tune
//	encrypt                     no gossip; the cluster port is mTLS
//	ca_file, cert_file,
//	key_file, verify_*          no HTTPS API (tests that need it fail)
//	connect.enabled             the mesh CA is always on
//	enable_debug                no pprof endpoints
//	peering, audit, locality,
//	experiments, version        not in vmesh
//	retry_join                  joins need a join token, which testutil has none of,
//	                            and it names serf_lan addresses (vmesh has no serf)
type testConfig struct {
	NodeName   string `json:"node_name"`
	NodeID     string `json:"node_id"`
	Datacenter string `json:"datacenter"`
	DataDir    string `json:"data_dir"`
	Bind       string `json:"bind_addr"`
	Bootstrap  bool   `json:"bootstrap"`
	Server     bool   `json:"server"`
	LogLevel   string `json:"log_level"`
	Addresses  struct {
		HTTP string `json:"http"`
	} `json:"addresses"`
	Ports struct {
		DNS     int `json:"dns"`
		HTTP    int `json:"http"`
		Server  int `json:"server"`
		SerfWan int `json:"serf_wan"`
	} `json:"ports"`
	ACL struct {
		Enabled       bool   `json:"enabled"`
		DefaultPolicy string `json:"default_policy"`
		Tokens        struct {
			Master  string `json:"master"`
			Agent   string `json:"agent"`
			Default string `json:"default"`
		} `json:"tokens"`
	} `json:"acl"`
	ACLDefaultPolicy string            `json:"acl_default_policy"`
	EnableScripts    bool              `json:"enable_script_checks"`
	NodeMeta         map[string]string `json:"node_meta"`
	Connect          struct {
		CAConfig struct {
			ClusterID string `json:"cluster_id"`
		} `json:"ca_config"`
	} `json:"connect"`
}

// vmeshConfig is the vmesh agent config file the shim writes (JSON, the
// same keys as HCL).
type vmeshConfig struct {
	NodeName          string            `json:"node_name"`
	NodeID            string            `json:"node_id,omitempty"`
	Datacenter        string            `json:"datacenter,omitempty"`
	DataDir           string            `json:"data_dir"`
	BindAddr          string            `json:"bind_addr"`
	ClientAddr        string            `json:"client_addr"`
	Bootstrap         bool              `json:"bootstrap,omitempty"`
	Server            bool              `json:"server,omitempty"`
	LogLevel          string            `json:"log_level,omitempty"`
	ServicesDir       string            `json:"services_dir"`
	IntentionsDefault string            `json:"intentions_default"`
	Ports             map[string]int    `json:"ports"`
	Addresses         map[string]string `json:"addresses"`
	Proxy             map[string]any    `json:"proxy"`
	Cluster           map[string]any    `json:"cluster,omitempty"`
	NodeMeta          map[string]string `json:"node_meta,omitempty"`
	ACL               map[string]any    `json:"acl"`
	EnableScripts     bool              `json:"enable_script_checks,omitempty"`
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "consul shim:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: consul version -format=json | consul agent -config-file FILE")
	}
	switch args[0] {
	case "version":
		return json.NewEncoder(os.Stdout).Encode(map[string]string{"Version": consulVersion})
	case "agent":
	default:
		return fmt.Errorf("command %q: the shim runs only `consul version` and `consul agent`", args[0])
	}
	var file string
	var extra []string // later -config-file: a test's own config, in Consul's keys
	for i := 1; i < len(args); i++ {
		switch a := args[i]; a {
		case "-config-file", "--config-file":
			if i+1 == len(args) {
				return fmt.Errorf("%s needs a file", a)
			}
			if file == "" {
				file = args[i+1]
			} else {
				extra = append(extra, args[i+1])
			}
			i++
		default:
			return fmt.Errorf("agent flag %q: the shim maps only -config-file", a)
		}
	}
	if file == "" {
		return errors.New("agent: -config-file is required")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var tc testConfig
	if err := json.Unmarshal(b, &tc); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	vc, err := translate(tc, filepath.Dir(file))
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	out, err := json.MarshalIndent(vc, "", "  ")
	if err != nil {
		return err
	}
	vfile := filepath.Join(filepath.Dir(file), "vmesh.json")
	if err := os.WriteFile(vfile, out, 0o600); err != nil {
		return err
	}
	if err := os.MkdirAll(vc.ServicesDir, 0o750); err != nil {
		return err
	}
	bin := os.Getenv("VMESH_BIN")
	if bin == "" {
		return errors.New("VMESH_BIN is not set: the path of the vmesh binary to run")
	}
	// testutil stops an agent only when the test gets that far: one whose
	// test failed in setup would outlive the test binary. The parent-death
	// signal survives the exec below, so the agent gets SIGTERM when the
	// test binary exits.
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0); errno != 0 {
		return fmt.Errorf("prctl(PR_SET_PDEATHSIG): %v", errno)
	}
	// Exec, so testutil's SIGINT reaches the agent itself.
	argv := []string{bin, "agent", "-config", vfile}
	for _, f := range extra {
		// vmesh reads Consul's service and check keys. An empty file (a
		// test that fills it in later and reloads) sets nothing, as in
		// Consul, and a reload re-reads it.
		argv = append(argv, "-config", f)
	}
	return syscall.Exec(bin, argv, os.Environ())
}

func translate(tc testConfig, dir string) (vmeshConfig, error) {
	if tc.Ports.HTTP == 0 || tc.Ports.Server == 0 {
		return vmeshConfig{}, errors.New("ports.http and ports.server are required (the shim never binds vmesh's defaults)")
	}
	if tc.Addresses.HTTP != "" {
		return vmeshConfig{}, fmt.Errorf("addresses.http %q: not mapped", tc.Addresses.HTTP)
	}
	bind := tc.Bind
	if bind == "" {
		bind = "127.0.0.1"
	}
	vc := vmeshConfig{
		NodeName:    tc.NodeName,
		NodeID:      tc.NodeID,
		Datacenter:  tc.Datacenter,
		DataDir:     tc.DataDir,
		BindAddr:    bind,
		ClientAddr:  "127.0.0.1", // testutil reaches HTTP at 127.0.0.1:ports.http
		Bootstrap:   tc.Bootstrap,
		Server:      tc.Server || tc.Bootstrap,
		LogLevel:    tc.LogLevel,
		ServicesDir: filepath.Join(dir, "services.d"),
		Ports:       map[string]int{"http": tc.Ports.HTTP, "cluster": tc.Ports.Server, "dns": -1},
		Addresses:   map[string]string{},
		// Consul's agent runs no proxy; its sidecars are separate Envoys.
		Proxy: map[string]any{"enabled": false},
	}
	// Consul's trust domain is <cluster_id>.consul: the SPIFFE IDs the
	// tests build name it.
	if id := tc.Connect.CAConfig.ClusterID; id != "" {
		vc.Cluster = map[string]any{"trust_domain": strings.ToLower(id) + ".consul"}
	}
	if len(tc.NodeMeta) > 0 {
		vc.NodeMeta = tc.NodeMeta
	}
	vc.EnableScripts = tc.EnableScripts
	if tc.Ports.DNS > 0 {
		vc.Ports["dns"] = tc.Ports.DNS
	}
	if tc.Ports.SerfWan <= 0 {
		return vmeshConfig{}, errors.New("ports.serf_wan is required: the shim lends it to vmesh's admin listener")
	}
	vc.Addresses["admin"] = net.JoinHostPort("127.0.0.1", strconv.Itoa(tc.Ports.SerfWan))

	// Consul's intentions follow the ACL default policy: allow without
	// ACLs or with default_policy allow, deny with default_policy deny.
	policy := tc.ACL.DefaultPolicy
	if policy == "" {
		policy = tc.ACLDefaultPolicy
	}
	vc.IntentionsDefault = "allow"
	// vmesh's ACLs are on unless turned off; Consul's are off unless
	// turned on.
	vc.ACL = map[string]any{"enabled": false}
	if tc.ACL.Enabled {
		if policy == "" {
			policy = "allow"
		}
		vc.IntentionsDefault = policy
		tokens := map[string]any{}
		if tc.ACL.Tokens.Master != "" {
			tokens["initial_management"] = tc.ACL.Tokens.Master
		}
		if tc.ACL.Tokens.Agent != "" {
			tokens["agent"] = tc.ACL.Tokens.Agent
		}
		if tc.ACL.Tokens.Default != "" {
			tokens["default"] = tc.ACL.Tokens.Default
		}
		vc.ACL = map[string]any{"enabled": true, "default_policy": policy, "tokens": tokens}
	}
	return vc, nil
}
