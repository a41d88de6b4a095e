package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/vmesh/vmesh/discovery/local"
	"github.com/vmesh/vmesh/lab/testkit"

	"github.com/vmesh/vmesh/discovery"
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
			src:  "service {\n  name = \"web\"\n  port = 80\n  connect { sidecar_service {\n    port = 21000\n  } }\n}",
			errs: []string{"web.hcl:1", "Connect.SidecarService.Port: 21000", "mesh port 15443"},
		},
		{
			name: "sidecar checks", file: "web.hcl",
			src:  "service {\n  name = \"web\"\n  connect { sidecar_service {\n    checks = []\n  } }\n}",
			errs: []string{"web.hcl:4:5", `unknown key "checks"`},
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
			defs, err := LoadServiceFiles(dir)
			var reqs []*discovery.RegisterServiceRequest
			if err == nil {
				reqs, err = local.BuildFileServices("n1", defs)
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
			if defs[0].Service.Meta["protocol"] == "grpc" {
				t.Errorf("definition's meta was changed: %v", defs[0].Service.Meta)
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
				testkit.WriteFile(t, dir, name, src)
			}
			defs, err := LoadServiceFiles(dir)
			var reqs []*discovery.RegisterServiceRequest
			if err == nil {
				reqs, err = local.BuildFileServices("n1", defs)
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
				if d.Service.User != "" && d.Service.Meta[discovery.MetaUser] != "" {
					t.Errorf("definition's meta was changed: %v", d.Service.Meta)
				}
			}
		})
	}
}

// TestServiceFileSidecarRecord: a file's sidecar_service may name and
// label the sidecar record (name, tags, meta, port as the mesh port),
// in HCL and JSON alike.
func TestServiceFileSidecarRecord(t *testing.T) {
	for file, src := range map[string]string{
		"web.hcl": `service {
  name = "web"
  port = 8080
  connect { sidecar_service {
    name = "web-envoy"
    tags = ["sc"]
    meta = { k = "v" }
    port = 15443
  } }
}`,
		"web.json": `{"service": {"name": "web", "port": 8080, "connect": {"sidecar_service":
  {"name": "web-envoy", "tags": ["sc"], "meta": {"k": "v"}, "port": 15443}}}}`,
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, file), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		defs, err := LoadServiceFiles(dir)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		reqs, err := local.BuildFileServices("n1", defs)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		sc := reqs[0].Sidecar
		if sc == nil || sc.ID != "web-sidecar-proxy" || sc.Service != "web-envoy" || !reflect.DeepEqual(sc.Tags, []string{"sc"}) ||
			!reflect.DeepEqual(sc.Meta, map[string]string{"k": "v"}) || sc.Port != discovery.MeshPort {
			t.Errorf("%s: sidecar record %+v", file, sc)
		}
	}
}
