package mesh

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/mesh/config"
)

// TestServiceFileProtocolAndUpstreams: protocol and Consul's
// connect.sidecar_service.proxy.upstreams in a definition file reach the
// catalog's instance, in HCL and JSON alike; mistakes name file, line and
// key.
func TestServiceFileProtocolAndUpstreams(t *testing.T) {
	wantUp := []discovery.Upstream{
		{DestinationName: "orders", LocalBindPort: 19001}, // the agent's client address
		{DestinationName: "db", LocalBindAddress: "127.0.0.2", LocalBindPort: 19002},
	}
	cases := []struct {
		name, file, src string
		protocol        string
		meta            map[string]string
		upstreams       []discovery.Upstream
		errs            []string
	}{
		{
			name: "hcl", file: "web.hcl",
			src: `service {
  name = "web"
  port = 8080
  protocol = "grpc"
  meta = { team = "a" }
  connect {
    sidecar_service {
      proxy {
        upstreams = [
          { destination_name = "orders", local_bind_port = 19001 },
          { destination_name = "db", local_bind_address = "127.0.0.2", local_bind_port = 19002 },
        ]
      }
    }
  }
}`,
			protocol: "grpc", meta: map[string]string{"protocol": "grpc", "team": "a"}, upstreams: wantUp,
		},
		{
			name: "json", file: "web.json",
			src: `{"service": {"name": "web", "port": 8080, "protocol": "grpc", "meta": {"team": "a"},
  "connect": {"sidecar_service": {"proxy": {"upstreams": [
    {"destination_name": "orders", "local_bind_port": 19001},
    {"DestinationName": "db", "LocalBindAddress": "127.0.0.2", "LocalBindPort": 19002}]}}}}}`,
			protocol: "grpc", meta: map[string]string{"protocol": "grpc", "team": "a"}, upstreams: wantUp,
		},
		{
			name: "repeated upstreams blocks", file: "web.hcl",
			src: `service {
  name = "web"
  connect { sidecar_service { proxy {
    upstreams { destination_name = "orders"  local_bind_port = 19001 }
    upstreams { destination_name = "db"  local_bind_address = "127.0.0.2"  local_bind_port = 19002 }
  } } }
}`,
			upstreams: wantUp,
		},
		{
			name: "protocol in meta only", file: "web.hcl",
			src:      `service { name = "web"  meta = { protocol = "http" } }`,
			protocol: "http", meta: map[string]string{"protocol": "http"},
		},
		{
			name: "same protocol twice", file: "web.hcl",
			src:      `service { name = "web"  protocol = "http"  meta = { protocol = "http" } }`,
			protocol: "http", meta: map[string]string{"protocol": "http"},
		},
		{
			name: "bad protocol", file: "web.hcl",
			src:  "service {\n  name = \"web\"\n  protocol = \"https\"\n}",
			errs: []string{"web.hcl:1", `service "web": protocol: "https" is not one of`},
		},
		{
			name: "protocol conflicts with meta", file: "web.hcl",
			src:  `service { name = "web"  protocol = "grpc"  meta = { protocol = "http" } }`,
			errs: []string{`protocol: "grpc" conflicts with meta.protocol "http"`},
		},
		{
			name: "sidecar port", file: "web.hcl",
			src:  "service {\n  name = \"web\"\n  connect { sidecar_service {\n    port = 21000\n  } }\n}",
			errs: []string{"web.hcl:4:5", `unknown key "port"`},
		},
		{
			name: "connect native", file: "web.hcl",
			src:  "service {\n  name = \"web\"\n  connect { native = true }\n}",
			errs: []string{"web.hcl:3", `unknown key "native"`},
		},
		{
			name: "upstream without port", file: "web.hcl",
			src:  `service { name = "web"  connect { sidecar_service { proxy { upstreams = [{ destination_name = "orders" }] } } } }`,
			errs: []string{"web.hcl:1", "Upstreams[0].LocalBindPort"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, tc.file), []byte(tc.src), 0o644); err != nil {
				t.Fatal(err)
			}
			defs, err := config.LoadServiceFiles(dir)
			var reqs []*discovery.RegisterServiceRequest
			if err == nil {
				reqs, err = buildFileServices("n1", defs)
			}
			if len(tc.errs) > 0 {
				if err == nil {
					t.Fatalf("built %+v, want an error", reqs)
				}
				for _, w := range tc.errs {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(reqs) != 1 {
				t.Fatalf("got %d registrations, want 1", len(reqs))
			}
			in := reqs[0].Instance
			if in.Protocol != tc.protocol || !reflect.DeepEqual(in.Meta, tc.meta) || !reflect.DeepEqual(in.Upstreams, tc.upstreams) {
				t.Errorf("instance protocol %q meta %v upstreams %+v; want %q %v %+v",
					in.Protocol, in.Meta, in.Upstreams, tc.protocol, tc.meta, tc.upstreams)
			}
			// The definition's own Meta is untouched (reload compares it).
			if defs[0].Def.Meta["protocol"] == "grpc" {
				t.Errorf("definition's meta was changed: %v", defs[0].Def.Meta)
			}
		})
	}
}

// TestServiceFileUser: `user` in a definition file reaches the instance
// (as Meta["vmesh-user"], where the Consul API carries it); a user this
// host does not have, and one user for two services, are refused naming
// the file, the line and the key.
func TestServiceFileUser(t *testing.T) {
	cases := []struct {
		name  string
		files map[string]string
		users map[string]string // instance ID -> User
		errs  []string
	}{
		{
			name:  "hcl",
			files: map[string]string{"a.hcl": `service { name = "billing"  user = "nobody"  port = 80 }`},
			users: map[string]string{"billing": "nobody"},
		},
		{
			name:  "json, by UID",
			files: map[string]string{"a.json": `{"service": {"name": "billing", "user": "65534", "port": 80}}`},
			users: map[string]string{"billing": "65534"},
		},
		{
			name:  "meta spelling",
			files: map[string]string{"a.hcl": `service { name = "billing"  meta = { vmesh-user = "nobody" } }`},
			users: map[string]string{"billing": "nobody"},
		},
		{
			name: "two instances of one service share a user",
			files: map[string]string{"a.hcl": `services = [
  { id = "web-1", name = "web", user = "nobody", port = 80 },
  { id = "web-2", name = "WEB", user = "nobody", port = 81 },
]`},
			users: map[string]string{"web-1": "nobody", "web-2": "nobody"},
		},
		{
			name:  "unknown user",
			files: map[string]string{"a.hcl": "service {\n  name = \"billing\"\n  user = \"no-such-user-vmesh\"\n}"},
			errs:  []string{"a.hcl:1", `service "billing": user: "no-such-user-vmesh" is not a user on this host`},
		},
		{
			name:  "not a user name",
			files: map[string]string{"a.hcl": `service { name = "billing"  user = "al ice" }`},
			errs:  []string{"a.hcl:1", `service "billing": user: "al ice" is not a user on this host`},
		},
		{
			name:  "not a user name, in meta",
			files: map[string]string{"a.hcl": `service { name = "billing"  meta = { vmesh-user = "al ice" } }`},
			errs:  []string{"a.hcl:1", `Meta.vmesh-user: "al ice" is not a user name or UID`},
		},
		{
			name: "one user, two services",
			files: map[string]string{
				"a.hcl": `service { name = "billing"  user = "nobody" }`,
				"b.hcl": "\n\nservice {\n  name = \"orders\"\n  user = \"65534\"\n}",
			},
			errs: []string{"b.hcl:3", `service "orders": user: "65534" already runs service "billing" (as "nobody", the same UID 65534), defined at `, "a.hcl:1; one service per user"},
		},
		{
			name:  "user conflicts with meta",
			files: map[string]string{"a.hcl": `service { name = "billing"  user = "nobody"  meta = { vmesh-user = "root" } }`},
			errs:  []string{`user: "nobody" conflicts with meta.vmesh-user "root"`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, src := range tc.files {
				writeFile(t, dir, name, src)
			}
			defs, err := config.LoadServiceFiles(dir)
			var reqs []*discovery.RegisterServiceRequest
			if err == nil {
				reqs, err = buildFileServices("n1", defs)
			}
			if len(tc.errs) > 0 {
				for _, w := range tc.errs {
					if err == nil || !strings.Contains(err.Error(), w) {
						t.Errorf("error %v does not mention %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, r := range reqs {
				got[r.Instance.ID] = r.Instance.User
				if r.Instance.Meta[discovery.MetaUser] != r.Instance.User {
					t.Errorf("%s: Meta %v, User %q", r.Instance.ID, r.Instance.Meta, r.Instance.User)
				}
			}
			if !reflect.DeepEqual(got, tc.users) {
				t.Errorf("users %v, want %v", got, tc.users)
			}
			for _, d := range defs {
				if d.Def.User != "" && d.Def.Meta[discovery.MetaUser] != "" {
					t.Errorf("definition's meta was changed: %v", d.Def.Meta)
				}
			}
		})
	}
}

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
	writeFile(t, dir, "a.hcl", `service { name = "alpha"  user = "40001"  port = 81 }`)
	writeFile(t, dir, "b.hcl", `service { name = "beta"  user = "40002"  port = 82 }`)
	a := startAgent(t, cfg)
	api := "http://" + a.HTTPAddr()
	instance := func(id string) *discovery.Instance {
		_, in, err := a.store.Instance(nil, cfg.NodeName, id)
		if err != nil {
			t.Fatal(err)
		}
		return in
	}
	waitFor(t, 10*time.Second, "file services registered", func() bool { return instance("alpha") != nil && instance("beta") != nil })
	if p, q := instance("alpha").UserPort, instance("beta").UserPort; p != 16100 || q != 16101 {
		t.Fatalf("file services' ports %d, %d; want 16100, 16101", p, q)
	}
	if code, body := httpDo(t, http.MethodPut, api+"/v1/agent/service/register",
		`{"Name":"web","Port":80,"Connect":{"SidecarService":{"Proxy":{"Upstreams":[{"DestinationName":"db","LocalBindPort":16101}]}}}}`); code != http.StatusBadRequest ||
		!strings.Contains(body, `Upstreams[0].LocalBindPort: port 16101 is the per-user outbound port of user "40002" (service "beta")`) {
		t.Errorf("an upstream on beta's port: %d %s", code, body)
	}
	if code, body := httpDo(t, http.MethodPut, api+"/v1/agent/service/register", `{"Name":"gamma","Port":83,"Meta":{"vmesh-user":"40003"}}`); code != http.StatusOK {
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
	if _, err := a.ref.Apply(ctx, &discovery.RegisterServiceRequest{Instance: legacy}); err != nil {
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
	writeFile(t, dir, "c.hcl", `service { name = "delta"  user = "40004"  port = 84 }`)
	up := `service { name = %q  port = %d
  connect { sidecar_service { proxy { upstreams = [{ destination_name = "db", local_bind_port = %d }] } } } }`
	writeFile(t, dir, "d.hcl", fmt.Sprintf(up, "web", 85, 16101))
	writeFile(t, dir, "e.hcl", fmt.Sprintf(up, "bad", 86, 16102))
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
