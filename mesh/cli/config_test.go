package cli

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
)

// TestConfigEntryFiles: config entry files in Consul's HCL and JSON shapes
// decode to the entry the API would store; mistakes name file, line and
// field, before anything is sent.
func TestConfigEntryFiles(t *testing.T) {
	router := &discovery.ConfigEntry{Kind: discovery.KindServiceRouter, Name: "web", Router: &discovery.ServiceRouter{Routes: []discovery.ServiceRoute{
		{
			Match: &discovery.ServiceRouteMatch{HTTP: &discovery.ServiceRouteHTTPMatch{PathPrefix: "/admin",
				Header: []discovery.ServiceRouteHTTPMatchHeader{{Name: "x-debug", Exact: "1"}}, Methods: []string{"GET"}}},
			Destination: &discovery.ServiceRouteDestination{Service: "admin", RequestTimeout: discovery.Duration(2 * time.Second), NumRetries: 3},
		},
	}}}
	cases := []struct {
		name, file, src string
		want            *discovery.ConfigEntry
		errs            []string
	}{
		{
			name: "router hcl, Consul's CamelCase", file: "r.hcl",
			src: `Kind = "service-router"
Name = "web"
Routes = [
  {
    Match { HTTP {
      PathPrefix = "/admin"
      Header = [{ Name = "x-debug", Exact = "1" }]
      Methods = ["GET"]
    } }
    Destination {
      Service = "admin"
      RequestTimeout = "2s"
      NumRetries = 3
    }
  },
]`,
			want: router,
		},
		{
			name: "router hcl, snake_case", file: "r.hcl",
			src: `kind = "service-router"
name = "web"
routes = [{
  match { http {
    path_prefix = "/admin"
    header = [{ name = "x-debug", exact = "1" }]
    methods = ["GET"]
  } }
  destination { service = "admin", request_timeout = "2s", num_retries = 3 }
}]`,
			want: router,
		},
		{
			name: "router json", file: "r.json",
			src: `{"Kind": "service-router", "Name": "web", "Routes": [{
  "Match": {"HTTP": {"PathPrefix": "/admin", "Header": [{"Name": "x-debug", "Exact": "1"}], "Methods": ["GET"]}},
  "Destination": {"Service": "admin", "RequestTimeout": "2s", "NumRetries": 3}}]}`,
			want: router,
		},
		{
			name: "splitter", file: "s.hcl",
			src: "kind = \"service-splitter\"\nname = \"web\"\nsplits = [\n  { weight = 90 },\n  { weight = 10, service = \"web-v2\" },\n]\n",
			want: &discovery.ConfigEntry{Kind: discovery.KindServiceSplitter, Name: "web", Splitter: &discovery.ServiceSplitter{
				Splits: []discovery.ServiceSplit{{Weight: 90}, {Weight: 10, Service: "web-v2"}}}},
		},
		{
			name: "resolver", file: "r.hcl",
			src: `kind = "service-resolver"
name = "web"
connect_timeout = "3s"
load_balancer { policy = "least_request", least_request_config { choice_count = 4 } }`,
			want: &discovery.ConfigEntry{Kind: discovery.KindServiceResolver, Name: "web", Resolver: &discovery.ServiceResolver{
				ConnectTimeout: discovery.Duration(3 * time.Second),
				LoadBalancer:   &discovery.LoadBalancer{Policy: "least_request", LeastRequestConfig: &discovery.LeastRequestConfig{ChoiceCount: 4}}}},
		},
		{
			name: "defaults", file: "d.json",
			src: `{"kind": "service-defaults", "name": "api", "protocol": "grpc", "meta": {"owner": "x"}}`,
			want: &discovery.ConfigEntry{Kind: discovery.KindServiceDefaults, Name: "api", Meta: map[string]string{"owner": "x"},
				Defaults: &discovery.ServiceDefaults{Protocol: "grpc"}},
		},
		{
			name: "proxy-defaults", file: "p.hcl",
			src: `Kind = "proxy-defaults"
Name = "global"
AccessLogs {
  Enabled = true
  Type    = "file"
  Path    = "/var/log/vmesh/access.log"
  text_format = "%RESPONSE_CODE% %RESPONSE_FLAGS%"
}`,
			want: &discovery.ConfigEntry{Kind: discovery.KindProxyDefaults, Name: "global", Proxy: &discovery.ProxyDefaults{AccessLogs: &discovery.AccessLogs{
				Enabled: true, Type: "file", Path: "/var/log/vmesh/access.log", TextFormat: "%RESPONSE_CODE% %RESPONSE_FLAGS%"}}},
		},
		{
			name: "ingress-gateway", file: "i.hcl",
			src: `kind = "ingress-gateway"
name = "ingress"
tls { enabled = true, tls_min_version = "TLSv1_2" }
listeners = [
  { port = 8080, protocol = "HTTP", services = [{ name = "web", hosts = ["web.example.com"] }] },
  { port = 9000, services = [{ name = "db" }] },
]`,
			want: &discovery.ConfigEntry{Kind: discovery.KindIngressGateway, Name: "ingress", Ingress: &discovery.IngressGateway{
				TLS: discovery.GatewayTLSConfig{Enabled: true, TLSMinVersion: "TLSv1_2"},
				Listeners: []discovery.IngressListener{
					{Port: 8080, Protocol: "http", Services: []discovery.IngressService{{Name: "web", Hosts: []string{"web.example.com"}}}},
					{Port: 9000, Protocol: "tcp", Services: []discovery.IngressService{{Name: "db"}}},
				}}},
		},
		{
			name: "terminating-gateway", file: "t.hcl",
			src: "Kind = \"terminating-gateway\"\nName = \"egress\"\nServices = [{ Name = \"billing\", ca_file = \"ca.pem\", SNI = \"billing.example\" }]\n",
			want: &discovery.ConfigEntry{Kind: discovery.KindTerminatingGateway, Name: "egress", Terminating: &discovery.TerminatingGateway{
				Services: []discovery.LinkedService{{Name: "billing", CAFile: "ca.pem", SNI: "billing.example"}}}},
		},
		{name: "ingress listener protocol", file: "i.hcl", src: "kind = \"ingress-gateway\"\nname = \"in\"\nlisteners = [{ port = 80, protocol = \"udp\", services = [{ name = \"web\" }] }]\n",
			errs: []string{"i.hcl", "Listeners[0].Protocol"}},
		{name: "proxy-defaults both formats", file: "p.hcl", src: "kind = \"proxy-defaults\"\nname = \"global\"\naccess_logs {\n  json_format = \"{}\"\n  text_format = \"x\"\n}\n",
			errs: []string{"p.hcl", "AccessLogs.JSONFormat: set at most one of JSONFormat and TextFormat"}},
		{name: "unknown key", file: "d.hcl", src: "kind = \"service-defaults\"\nname = \"web\"\nprotocl = \"http\"\n", errs: []string{"d.hcl:3:1", `unknown key "protocl"`}},
		{name: "bad duration", file: "r.hcl", src: "kind = \"service-resolver\"\nname = \"web\"\nconnect_timeout = \"soon\"\n", errs: []string{"r.hcl:3", "connect_timeout"}},
		{name: "field of another kind", file: "d.hcl", src: "kind = \"service-defaults\"\nname = \"web\"\nsplits = [{ weight = 100 }]\n", errs: []string{"d.hcl", `"Splits"`}},
		{name: "validation", file: "s.hcl", src: "kind = \"service-splitter\"\nname = \"web\"\nsplits = [{ weight = 50 }]\n", errs: []string{"s.hcl", "add up to 100"}},
		{name: "no kind", file: "s.hcl", src: "name = \"web\"\n", errs: []string{"s.hcl", "Kind: missing"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := testkit.WriteFile(t, t.TempDir(), tc.file, tc.src)
			got, body, err := readConfigEntryFile(path)
			if len(tc.errs) > 0 {
				if err == nil {
					t.Fatalf("read %+v, want an error", got)
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
			if !reflect.DeepEqual(got, tc.want) {
				g, _ := json.Marshal(got)
				w, _ := json.Marshal(tc.want)
				t.Errorf("got  %s\nwant %s", g, w)
			}
			if again, err := discovery.DecodeConfigEntry(body); err != nil || !reflect.DeepEqual(again, got) {
				t.Errorf("the body sent does not decode to the same entry: %s: %v", body, err)
			}
		})
	}
}

// TestConfigEntryFileIntentions: a service-intentions file, as `consul
// config write` takes one, becomes the body PUT /v1/config checks the same
// way; what vmesh does not support is named with the file.
func TestConfigEntryFileIntentions(t *testing.T) {
	src := `Kind = "service-intentions"
Name = "db"
Sources = [
  { Name = "web", Action = "allow", Description = "the shop" },
  { name = "*", action = "deny", legacy_meta { owner = "ops" } },
]
`
	path := testkit.WriteFile(t, t.TempDir(), "db.hcl", src)
	e, body, err := readConfigEntryFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if e.Kind != discovery.KindServiceIntentions || e.Name != "db" {
		t.Errorf("entry = %s/%s, want service-intentions/db", e.Kind, e.Name)
	}
	dst, ixns, err := discovery.DecodeServiceIntentions(body)
	if err != nil {
		t.Fatalf("the body sent does not decode: %s: %v", body, err)
	}
	got := map[string]string{}
	for _, x := range ixns {
		got[x.SourceName] = x.Action + "/" + x.Description + "/" + x.Meta["owner"]
	}
	if dst != "db" || len(got) != 2 || got["web"] != "allow/the shop/" || got["*"] != "deny//ops" {
		t.Errorf("decoded %s %v", dst, got)
	}

	for _, tc := range []struct{ name, src, want string }{
		{"peer", "kind = \"service-intentions\"\nname = \"db\"\nsources = [{ name = \"web\", action = \"allow\", peer = \"other\" }]\n", "Sources[0].Peer"},
		{"no action", "kind = \"service-intentions\"\nname = \"db\"\nsources = [{ name = \"web\" }]\n", "Sources[0]"},
		{"permissions", "kind = \"service-intentions\"\nname = \"db\"\nsources = [{ name = \"web\", permissions = [] }]\n", "permissions"},
		{"field of another kind", "kind = \"service-intentions\"\nname = \"db\"\nprotocol = \"http\"\n", "Protocol"},
		{"sources on another kind", "kind = \"service-defaults\"\nname = \"db\"\nsources = [{ name = \"web\", action = \"allow\" }]\n", "only a service-intentions entry has sources"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := testkit.WriteFile(t, t.TempDir(), "x.hcl", tc.src)
			_, _, err := readConfigEntryFile(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "x.hcl") {
				t.Errorf("error %v; want one naming x.hcl and %q", err, tc.want)
			}
		})
	}
}
