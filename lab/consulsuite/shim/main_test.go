//go:build linux

package main

import (
	"encoding/json"
	"testing"
)

// TestTranslate: testutil's default config becomes a vmesh config on
// testutil's ports only (admin on serf_wan, DNS and cluster on theirs),
// with ACLs off as Consul's default, the in-process proxy off, and
// Consul's trust domain; ACL settings map to vmesh's keys.
func TestTranslate(t *testing.T) {
	raw := `{"node_name":"n","node_id":"11111111-2222-3333-4444-555555555555","bootstrap":true,"server":true,
		"data_dir":"/d/data","bind_addr":"127.0.0.1","addresses":{},"log_level":"debug",
		"ports":{"dns":101,"http":102,"https":103,"serf_lan":104,"serf_wan":105,"server":106,"grpc":107},
		"acl":{"tokens":{}},"connect":{"enabled":true,"ca_config":{"cluster_id":"AAAA"}}}`
	var tc testConfig
	if err := json.Unmarshal([]byte(raw), &tc); err != nil {
		t.Fatal(err)
	}
	vc, err := translate(tc, "/d")
	if err != nil {
		t.Fatal(err)
	}
	if vc.Ports["http"] != 102 || vc.Ports["cluster"] != 106 || vc.Ports["dns"] != 101 || vc.Addresses["admin"] != "127.0.0.1:105" {
		t.Errorf("ports %v, addresses %v: want testutil's", vc.Ports, vc.Addresses)
	}
	if vc.ACL["enabled"] != false || vc.Proxy["enabled"] != false || vc.IntentionsDefault != "allow" {
		t.Errorf("acl %v, proxy %v, intentions %q: want ACLs and the proxy off, intentions allow", vc.ACL, vc.Proxy, vc.IntentionsDefault)
	}
	if vc.Cluster["trust_domain"] != "aaaa.consul" || vc.NodeID != tc.NodeID || !vc.Bootstrap || vc.ServicesDir != "/d/services.d" {
		t.Errorf("got %+v", vc)
	}

	tc.ACL.Enabled, tc.ACL.DefaultPolicy, tc.ACL.Tokens.Master, tc.ACL.Tokens.Agent = true, "deny", "root", "agent"
	if vc, err = translate(tc, "/d"); err != nil {
		t.Fatal(err)
	}
	tokens, _ := vc.ACL["tokens"].(map[string]any)
	if vc.ACL["enabled"] != true || vc.ACL["default_policy"] != "deny" || tokens["initial_management"] != "root" || tokens["agent"] != "agent" || vc.IntentionsDefault != "deny" {
		t.Errorf("ACLs on: acl %v, intentions %q", vc.ACL, vc.IntentionsDefault)
	}

	tc.Ports.HTTP = 0
	if _, err := translate(tc, "/d"); err == nil {
		t.Error("no ports.http: translated; want an error (never vmesh's default port)")
	}
}
