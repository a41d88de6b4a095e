package httpapi

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/vmesh/vmesh/discovery"
)

// buildBody decodes body as PUT /v1/agent/service/register does and builds
// it.
func buildBody(t *testing.T, body string) (*discovery.RegisterServiceRequest, error) {
	t.Helper()
	var reg discovery.ServiceRegistration
	if err := decodeBody(httptest.NewRecorder(), httptest.NewRequest("PUT", "/", strings.NewReader(body)), &reg); err != nil {
		return nil, err
	}
	return reg.Build("n1", "api")
}

func TestBuildProtocolAndUpstreams(t *testing.T) {
	cases := []struct {
		name      string
		body      string
		protocol  string
		upstreams []discovery.Upstream
		errs      []string // substrings of the error; none means success
	}{
		{name: "no protocol", body: `{"Name":"web"}`},
		{name: "grpc", body: `{"Name":"web","Meta":{"protocol":"grpc"}}`, protocol: "grpc"},
		{name: "each valid protocol", body: `{"Name":"web","Meta":{"protocol":"http2"}}`, protocol: "http2"},
		{name: "udp", body: `{"Name":"dns","Meta":{"protocol":"udp"}}`, protocol: "udp"},
		{name: "bad protocol", body: `{"Name":"web","Meta":{"protocol":"https"}}`, errs: []string{"Meta.protocol", `"https"`, "tcp, http, http2, grpc, udp"}},
		{name: "protocol is case-sensitive", body: `{"Name":"web","Meta":{"protocol":"GRPC"}}`, errs: []string{"Meta.protocol"}},
		{
			name: "upstreams",
			body: `{"Name":"web","Connect":{"SidecarService":{"Proxy":{"Upstreams":[
				{"DestinationName":"orders","LocalBindPort":19001},
				{"DestinationName":"db","LocalBindAddress":"127.0.0.2","LocalBindPort":19002}]}}}}`,
			upstreams: []discovery.Upstream{
				// No address: the agent's client address, which the host's
				// proxy fills in; the catalog keeps it empty.
				{DestinationName: "orders", LocalBindAddress: "", LocalBindPort: 19001},
				{DestinationName: "db", LocalBindAddress: "127.0.0.2", LocalBindPort: 19002},
			},
		},
		{
			name: "upstream address normalised",
			body: `{"Name":"web","Connect":{"SidecarService":{"Proxy":{"Upstreams":[
				{"DestinationName":"db","LocalBindAddress":"0:0::1","LocalBindPort":19002}]}}}}`,
			upstreams: []discovery.Upstream{{DestinationName: "db", LocalBindAddress: "::1", LocalBindPort: 19002}},
		},
		{name: "empty connect", body: `{"Name":"web","Connect":{}}`},
		{name: "empty sidecar", body: `{"Name":"web","Connect":{"SidecarService":{}}}`},
		{name: "empty proxy", body: `{"Name":"web","Proxy":{}}`},
		{name: "connect native", body: `{"Name":"web","Connect":{"Native":true}}`, errs: []string{"Connect.Native: not supported"}},
		{name: "sidecar port", body: `{"Name":"web","Connect":{"SidecarService":{"Port":21000}}}`, errs: []string{"Connect.SidecarService.Port: 21000", "mesh port 15443"}},
		{name: "sidecar address", body: `{"Name":"web","Port":80,"Connect":{"SidecarService":{"Address":"10.0.0.9"}}}`, errs: []string{"Connect.SidecarService.Address", "node's address"}},
		{name: "sidecar tagged addresses", body: `{"Name":"web","Port":80,"Connect":{"SidecarService":{"TaggedAddresses":{"lan":{"Address":"10.0.0.9","Port":1}}}}}`, errs: []string{"Connect.SidecarService.TaggedAddresses: not supported"}},
		{name: "sidecar checks", body: `{"Name":"web","Connect":{"SidecarService":{"Checks":[{"TTL":"1s"}]}}}`, errs: []string{"Connect.SidecarService.Checks"}},
		{name: "proxy config", body: `{"Name":"web","Connect":{"SidecarService":{"Proxy":{"Config":{"protocol":"http"}}}}}`, errs: []string{"Connect.SidecarService.Proxy.Config: not supported"}},
		{name: "top-level proxy", body: `{"Name":"web","Proxy":{"DestinationServiceName":"x"}}`, errs: []string{"Proxy.DestinationServiceName"}},
		{name: "upstream without name", body: `{"Name":"web","Connect":{"SidecarService":{"Proxy":{"Upstreams":[{"LocalBindPort":1}]}}}}`, errs: []string{"Upstreams[0].DestinationName: missing"}},
		{name: "upstream without port", body: `{"Name":"web","Connect":{"SidecarService":{"Proxy":{"Upstreams":[{"DestinationName":"a"}]}}}}`, errs: []string{"Upstreams[0].LocalBindPort", "got 0"}},
		{name: "upstream bad address", body: `{"Name":"web","Connect":{"SidecarService":{"Proxy":{"Upstreams":[{"DestinationName":"a","LocalBindPort":1,"LocalBindAddress":"localhost"}]}}}}`, errs: []string{"Upstreams[0].LocalBindAddress", "localhost"}},
		{name: "upstream datacenter", body: `{"Name":"web","Connect":{"SidecarService":{"Proxy":{"Upstreams":[{"DestinationName":"a","LocalBindPort":1,"Datacenter":"dc2"}]}}}}`, errs: []string{"Upstreams[0].Datacenter: not supported"}},
		{name: "upstream prepared query", body: `{"Name":"web","Connect":{"SidecarService":{"Proxy":{"Upstreams":[{"DestinationType":"prepared_query","DestinationName":"a","LocalBindPort":1}]}}}}`, errs: []string{"Upstreams[0].DestinationType"}},
		{
			name: "upstreams on one port",
			body: `{"Name":"web","Connect":{"SidecarService":{"Proxy":{"Upstreams":[
				{"DestinationName":"a","LocalBindPort":19001},{"DestinationName":"b","LocalBindPort":19001}]}}}}`,
			errs: []string{"Upstreams[1].LocalBindPort", "19001 on the client address is already bound by Upstreams[0]"},
		},
		{
			name: "upstreams on one address and port",
			body: `{"Name":"web","Connect":{"SidecarService":{"Proxy":{"Upstreams":[
				{"DestinationName":"a","LocalBindAddress":"::1","LocalBindPort":19001},{"DestinationName":"b","LocalBindAddress":"0::1","LocalBindPort":19001}]}}}}`,
			errs: []string{"Upstreams[1].LocalBindPort", "19001 on ::1 is already bound by Upstreams[0]"},
		},
		{
			// Whether the client address is 127.0.0.2 is known on the
			// host only; its proxy gives the port to the first upstream.
			name: "one port on the client address and on an explicit one",
			body: `{"Name":"web","Connect":{"SidecarService":{"Proxy":{"Upstreams":[
				{"DestinationName":"a","LocalBindPort":19001},{"DestinationName":"b","LocalBindAddress":"127.0.0.2","LocalBindPort":19001}]}}}}`,
			upstreams: []discovery.Upstream{
				{DestinationName: "a", LocalBindPort: 19001},
				{DestinationName: "b", LocalBindAddress: "127.0.0.2", LocalBindPort: 19001},
			},
		},
		{name: "unknown connect field", body: `{"Name":"web","Connect":{"Bogus":1}}`, errs: []string{`"Bogus"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := buildBody(t, tc.body)
			if len(tc.errs) > 0 {
				if err == nil {
					t.Fatalf("built %+v, want an error mentioning %q", req, tc.errs)
				}
				for _, w := range tc.errs {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
				var he *HTTPError
				if !errors.Is(err, discovery.ErrInvalid) && !(errors.As(err, &he) && he.Code == 400) {
					t.Errorf("error %v is not a 400", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if req.Instance.Protocol != tc.protocol {
				t.Errorf("Protocol = %q, want %q", req.Instance.Protocol, tc.protocol)
			}
			if !reflect.DeepEqual(req.Instance.Upstreams, tc.upstreams) {
				t.Errorf("Upstreams = %+v, want %+v", req.Instance.Upstreams, tc.upstreams)
			}
		})
	}
}

// TestBuildConsulAPIRegistration: what a stock consul/api client sends for
// a sidecar with upstreams (empty MeshGateway and Expose objects, null
// checks) decodes strictly and builds.
func TestBuildConsulAPIRegistration(t *testing.T) {
	reg := &api.AgentServiceRegistration{
		Name: "web", Port: 8080, Meta: map[string]string{"protocol": "http"},
		Connect: &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{
			Proxy: &api.AgentServiceConnectProxyConfig{Upstreams: []api.Upstream{
				{DestinationName: "orders", LocalBindPort: 19001},
			}},
		}},
	}
	body, err := json.Marshal(reg)
	if err != nil {
		t.Fatal(err)
	}
	req, err := buildBody(t, string(body))
	if err != nil {
		t.Fatalf("building %s: %v", body, err)
	}
	want := []discovery.Upstream{{DestinationName: "orders", LocalBindPort: 19001}}
	if req.Instance.Protocol != "http" || !reflect.DeepEqual(req.Instance.Upstreams, want) {
		t.Fatalf("instance = %+v, want protocol http and upstreams %+v", req.Instance, want)
	}

	// And a sidecar with a port the node proxy does not serve, as Consul
	// users write one, is refused by name rather than ignored.
	reg.Connect.SidecarService.Port = 21000
	body, _ = json.Marshal(reg)
	if _, err := buildBody(t, string(body)); err == nil || !strings.Contains(err.Error(), "Connect.SidecarService.Port") {
		t.Fatalf("sidecar with a port: err = %v, want Connect.SidecarService.Port refused", err)
	}
}

// TestBuildConsulCLISidecar: `consul services register` fills Consul's
// defaults into every sidecar it sends (Weights 1/1, an empty Check, empty
// Checks, and zero TransparentProxy, AccessLogs, Expose and MeshGateway
// objects); they mean "no setting" and are accepted, while a weight or a
// check someone actually set is still refused by name.
func TestBuildConsulCLISidecar(t *testing.T) {
	sidecar := func() *api.AgentServiceRegistration {
		return &api.AgentServiceRegistration{
			Weights: &api.AgentWeights{Passing: 1, Warning: 1},
			Check:   &api.AgentServiceCheck{},
			Checks:  api.AgentServiceChecks{},
			Proxy: &api.AgentServiceConnectProxyConfig{
				TransparentProxy: &api.TransparentProxyConfig{}, AccessLogs: &api.AccessLogsConfig{},
				Upstreams: []api.Upstream{{DestinationType: api.UpstreamDestTypeService, DestinationName: "db", LocalBindPort: 19191}},
			},
		}
	}
	build := func(sc *api.AgentServiceRegistration) (*discovery.RegisterServiceRequest, error) {
		reg := &api.AgentServiceRegistration{Name: "web", Port: 8080, Weights: &api.AgentWeights{Passing: 1, Warning: 1},
			Connect: &api.AgentServiceConnect{SidecarService: sc}}
		body, err := json.Marshal(reg)
		if err != nil {
			t.Fatal(err)
		}
		return buildBody(t, string(body))
	}
	req, err := build(sidecar())
	if err != nil {
		t.Fatalf("the CLI's sidecar: %v", err)
	}
	if want := []discovery.Upstream{{DestinationName: "db", LocalBindPort: 19191}}; !reflect.DeepEqual(req.Instance.Upstreams, want) {
		t.Errorf("Upstreams = %+v, want %+v", req.Instance.Upstreams, want)
	}
	for _, tc := range []struct {
		name   string
		change func(*api.AgentServiceRegistration)
		want   string
	}{
		{"weights", func(s *api.AgentServiceRegistration) { s.Weights = &api.AgentWeights{Passing: 0, Warning: 1} }, "Connect.SidecarService.Weights.Passing"},
		{"check", func(s *api.AgentServiceRegistration) { s.Check = &api.AgentServiceCheck{TTL: "10s"} }, "Connect.SidecarService.Check"},
		{"checks", func(s *api.AgentServiceRegistration) { s.Checks = api.AgentServiceChecks{{TTL: "10s"}} }, "Connect.SidecarService.Checks"},
	} {
		sc := sidecar()
		tc.change(sc)
		if _, err := build(sc); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s set: err = %v, want %s refused", tc.name, err, tc.want)
		}
	}
}
