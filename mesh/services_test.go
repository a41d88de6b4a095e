package mesh

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"

	"github.com/vmesh/vmesh/discovery"
)

// TestServiceFileUserPorts: the agent's service files and its HTTP API
// give users ports under one lock, from one policy: a file service's port
// is stored with it, kept across reloads and when another user goes, an
// API upstream may not take it, and a file instance stored before ports
// were gets the port it has stored on the next sync.
func TestServiceFileUserPorts(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t)
	cfg.Capture.UserPortBase = 16100
	dir := t.TempDir()
	cfg.ServicesDir = dir
	testkit.WriteFile(t, dir, "a.hcl", `service { name = "alpha"  user = "40001"  port = 81 }`)
	testkit.WriteFile(t, dir, "b.hcl", `service { name = "beta"  user = "40002"  port = 82 }`)
	a := startAgent(t, cfg)
	api := "http://" + a.HTTPAddr()
	instance := func(id string) *discovery.Instance {
		_, in, err := a.store.Instance(nil, cfg.NodeName, id)
		if err != nil {
			t.Fatal(err)
		}
		return in
	}
	testkit.WaitFor(t, 10*time.Second, "file services registered", func() bool { return instance("alpha") != nil && instance("beta") != nil })
	if p, q := instance("alpha").UserPort, instance("beta").UserPort; p != 16100 || q != 16101 {
		t.Fatalf("file services' ports %d, %d; want 16100, 16101", p, q)
	}
	if code, body := testkit.HTTPDo(t, http.MethodPut, api+"/v1/agent/service/register",
		`{"Name":"web","Port":80,"Connect":{"SidecarService":{"Proxy":{"Upstreams":[{"DestinationName":"db","LocalBindPort":16101}]}}}}`); code != http.StatusBadRequest ||
		!strings.Contains(body, `Upstreams[0].LocalBindPort: port 16101 is the per-user outbound port of user "40002" (service "beta")`) {
		t.Errorf("an upstream on beta's port: %d %s", code, body)
	}
	if code, body := testkit.HTTPDo(t, http.MethodPut, api+"/v1/agent/service/register", `{"Name":"gamma","Port":83,"Meta":{"vmesh-user":"40003"}}`); code != http.StatusOK {
		t.Fatalf("registering gamma: %d %s", code, body)
	}
	if p := instance("gamma").UserPort; p != 16102 {
		t.Errorf("gamma's port %d, want 16102", p)
	}

	// alpha's file goes: beta and gamma stay where they are, and beta's
	// unchanged definition is not rewritten.
	betaIdx := instance("beta").ModifyIndex
	if err := os.Remove(filepath.Join(dir, "a.hcl")); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(ctx, a.cfg); err != nil {
		t.Fatal(err)
	}
	if in := instance("alpha"); in != nil {
		t.Errorf("alpha still registered: %+v", in)
	}
	if b, g := instance("beta"), instance("gamma"); b.UserPort != 16101 || g.UserPort != 16102 || b.ModifyIndex != betaIdx {
		t.Errorf("after alpha went: beta %d (index %d, was %d), gamma %d; want 16101, unchanged, 16102", b.UserPort, b.ModifyIndex, betaIdx, g.UserPort)
	}

	// beta as an agent before this change stored it (no port), with a
	// user registered after it: its next sync stores the port it has
	// (16100, computed) rather than moving it.
	legacy := *instance("beta")
	legacy.UserPort = 0
	if _, err := a.member.Apply(ctx, &discovery.RegisterServiceRequest{Instance: legacy}); err != nil {
		t.Fatal(err)
	}
	_, insts, _ := a.store.NodeInstances(nil, cfg.NodeName)
	if got := a.xdsOptions().UserPorts(cfg.NodeName, insts); len(got) != 2 || got[0].Port != 16100 || got[1].Port != 16102 {
		t.Fatalf("ports with beta unstored: %v", got)
	}
	if err := a.Reload(ctx, a.cfg); err != nil {
		t.Fatal(err)
	}
	if p := instance("beta").UserPort; p != 16100 {
		t.Errorf("beta's port after the sync: %d, want 16100 (the one it had)", p)
	}

	// A new file user avoids the ports the files' upstreams bind (16101
	// here), whichever file comes first; a file whose upstream is on a
	// user's port is skipped, and the others are registered.
	testkit.WriteFile(t, dir, "c.hcl", `service { name = "delta"  user = "40004"  port = 84 }`)
	up := `service { name = %q  port = %d
  connect { sidecar_service { proxy { upstreams = [{ destination_name = "db", local_bind_port = %d }] } } } }`
	testkit.WriteFile(t, dir, "d.hcl", fmt.Sprintf(up, "web", 85, 16101))
	testkit.WriteFile(t, dir, "e.hcl", fmt.Sprintf(up, "bad", 86, 16102))
	if err := a.Reload(ctx, a.cfg); err != nil {
		t.Fatal(err)
	}
	if d, w := instance("delta"), instance("web"); d == nil || w == nil || d.UserPort != 16103 {
		t.Errorf("delta %+v, web %+v; want both, delta on 16103", d, w)
	}
	if in := instance("bad"); in != nil {
		t.Errorf("an upstream on gamma's port was registered: %+v", in)
	}
}
