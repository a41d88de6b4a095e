package mesh

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/discovery"
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
		{name: "unknown key", file: "d.hcl", src: "kind = \"service-defaults\"\nname = \"web\"\nprotocl = \"http\"\n", errs: []string{"d.hcl:3:1", `unknown key "protocl"`}},
		{name: "bad duration", file: "r.hcl", src: "kind = \"service-resolver\"\nname = \"web\"\nconnect_timeout = \"soon\"\n", errs: []string{"r.hcl:3", "connect_timeout"}},
		{name: "field of another kind", file: "d.hcl", src: "kind = \"service-defaults\"\nname = \"web\"\nsplits = [{ weight = 100 }]\n", errs: []string{"d.hcl", `"Splits"`}},
		{name: "validation", file: "s.hcl", src: "kind = \"service-splitter\"\nname = \"web\"\nsplits = [{ weight = 50 }]\n", errs: []string{"s.hcl", "add up to 100"}},
		{name: "no kind", file: "s.hcl", src: "name = \"web\"\n", errs: []string{"s.hcl", "Kind: missing"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, t.TempDir(), tc.file, tc.src)
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

// TestCLIConfig writes, reads, lists and deletes config entries through a
// running agent, raft included.
func TestCLIConfig(t *testing.T) {
	a := startAgent(t, testConfig(t))
	t.Setenv("VMESH_HTTP_ADDR", a.HTTPAddr())
	dir := t.TempDir()
	file := writeFile(t, dir, "web.hcl", "kind = \"service-defaults\"\nname = \"web\"\nprotocol = \"http\"\n")
	if code, out, errs := runCLI(t, "config", "write", file); code != 0 || !strings.Contains(out, "Config entry written: service-defaults/web") {
		t.Fatalf("config write = %d\n%s%s", code, out, errs)
	}
	code, out, errs := runCLI(t, "config", "read", "service-defaults", "web")
	if code != 0 || !strings.Contains(out, `"Protocol": "http"`) || !strings.Contains(out, `"ModifyIndex"`) {
		t.Fatalf("config read = %d\n%s%s", code, out, errs)
	}
	var e struct{ ModifyIndex uint64 }
	if err := json.Unmarshal([]byte(out), &e); err != nil {
		t.Fatal(err)
	}
	// A stale --cas is refused; the current one is accepted.
	if code, _, errs := runCLI(t, "config", "write", "--cas", "1", file); code != exitFailed || !strings.Contains(errs, "not written") {
		t.Fatalf("config write with a stale cas = %d %q", code, errs)
	}
	if code, out, errs := runCLI(t, "config", "write", "--cas", jsonNumber(e.ModifyIndex), file); code != 0 {
		t.Fatalf("config write with the current cas = %d\n%s%s", code, out, errs)
	}
	if code, out, _ := runCLI(t, "config", "list", "service-defaults"); code != 0 || out != "web\n" {
		t.Fatalf("config list = %d %q", code, out)
	}
	if code, out, errs := runCLI(t, "config", "delete", "service-defaults", "web"); code != 0 || !strings.Contains(out, "deleted") {
		t.Fatalf("config delete = %d\n%s%s", code, out, errs)
	}
	if code, _, errs := runCLI(t, "config", "read", "service-defaults", "web"); code != exitFailed || !strings.Contains(errs, "404") {
		t.Fatalf("config read after delete = %d %q; want a 404", code, errs)
	}
	bad := writeFile(t, dir, "bad.hcl", "kind = \"service-defaults\"\nname = \"web\"\nprotocol = \"smtp\"\n")
	if code, _, errs := runCLI(t, "config", "write", bad); code != exitUsage || !strings.Contains(errs, "bad.hcl") || !strings.Contains(errs, "Protocol") {
		t.Fatalf("config write of a bad file = %d %q", code, errs)
	}
	if code, _, errs := runCLI(t, "config", "frob"); code != exitUsage || !strings.Contains(errs, "usage: vmesh config write") {
		t.Fatalf("config frob = %d %q", code, errs)
	}
}

func jsonNumber(v uint64) string {
	b, _ := json.Marshal(v)
	return string(b)
}
