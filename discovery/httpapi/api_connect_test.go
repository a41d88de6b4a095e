package httpapi

import (
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/vmesh/vmesh/discovery"
)

// TestConnectAuthorize: /v1/agent/connect/authorize decides by the
// intentions (web -> db allowed by its own intention, others by the
// wildcard one or the default), needs service:write on the target, refuses
// a URI that is not a service's SPIFFE ID, and does not authorize one of
// another trust domain. Through consul/api, as proxies call it.
func TestConnectAuthorize(t *testing.T) {
	f := newACLFixture(t)
	if err := f.s.SetCA(f.next(), &discovery.CARoot{TrustDomain: "vmesh.test", Fingerprint: "fp"}); err != nil {
		t.Fatal(err)
	}
	dbWriter := f.client(t, f.token(t, `service "db" { policy = "write" }`))
	for _, tc := range []struct {
		uri, reason string
		authorized  bool
	}{
		{"spiffe://vmesh.test/svc/web", "Matched L4 intention: web => db", true},
		{"spiffe://vmesh.test/ns/default/dc/dc1/svc/billing", "Matched L4 intention: billing => db", true},
		{"spiffe://vmesh.test/svc/other", "Matched L4 intention: * => db", true},
		{"spiffe://elsewhere.test/svc/web", "not from this cluster's trust domain", false},
	} {
		got, err := dbWriter.Agent().ConnectAuthorize(&api.AgentAuthorizeParams{Target: "db", ClientCertURI: tc.uri})
		if err != nil {
			t.Fatalf("%s: %v", tc.uri, err)
		}
		if got.Authorized != tc.authorized || !strings.Contains(got.Reason, tc.reason) {
			t.Errorf("%s -> db = %+v, want Authorized %v and a reason with %q", tc.uri, got, tc.authorized, tc.reason)
		}
	}
	// api (web's reader only) may not ask for db.
	webReader := f.client(t, f.token(t, `service "db" { policy = "read" }`))
	if _, err := webReader.Agent().ConnectAuthorize(&api.AgentAuthorizeParams{Target: "db", ClientCertURI: "spiffe://vmesh.test/svc/web"}); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("authorize with service:read on the target: %v, want a 403", err)
	}
	for _, uri := range []string{"", "https://vmesh.test/svc/web", "spiffe://vmesh.test/node/n1", "spiffe://vmesh.test/ns/team/dc/dc1/svc/web"} {
		if _, err := dbWriter.Agent().ConnectAuthorize(&api.AgentAuthorizeParams{Target: "db", ClientCertURI: uri}); err == nil || !strings.Contains(err.Error(), "400") {
			t.Errorf("ClientCertURI %q: %v, want a 400", uri, err)
		}
	}
}

// TestConnectLeafOnlyForLocalServices: the leaf endpoint needs
// service:write on the service and answers only for a service registered
// on this agent (web-n1 is on n1, db only on n2).
func TestConnectLeafOnlyForLocalServices(t *testing.T) {
	f := newACLFixture(t)
	if code, _, body := f.get(t, f.token(t, `service "web" { policy = "read" }`), "/v1/agent/connect/ca/leaf/web"); code != http.StatusForbidden {
		t.Errorf("leaf with service:read: %d %s, want 403", code, body)
	}
	if code, _, body := f.get(t, f.mgmt, "/v1/agent/connect/ca/leaf/db"); code != http.StatusNotFound || !strings.Contains(body, "not registered on this agent") {
		t.Errorf("leaf of a service on another node: %d %s, want 404", code, body)
	}
	// A proxy record on this node is no mesh service: no identity.
	if err := f.s.EnsureService(f.next(), &discovery.Instance{Node: "n1", ID: "gw", Service: "gw", Port: 8443, Kind: discovery.KindMeshGateway}, nil); err != nil {
		t.Fatal(err)
	}
	if code, _, body := f.get(t, f.mgmt, "/v1/agent/connect/ca/leaf/gw"); code != http.StatusNotFound || !strings.Contains(body, "not registered on this agent as a mesh service") {
		t.Errorf("leaf of a gateway record: %d %s, want 404", code, body)
	}
}

// TestAgentOpsACL: join needs agent:write, metrics agent:read, host
// operator:read, the CA configuration operator:read; the CA roots on the
// agent path are public.
func TestAgentOpsACL(t *testing.T) {
	f := newACLFixture(t)
	reader := f.token(t, `agent "n1" { policy = "read" }`)
	for _, tc := range []struct {
		method, path, token string
		want                int
	}{
		{"PUT", "/v1/agent/join/10.0.0.2:7400", reader, http.StatusForbidden},
		{"PUT", "/v1/agent/join/10.0.0.2:7400", f.mgmt, http.StatusOK}, // a member of this cluster
		{"PUT", "/v1/agent/join/10.0.0.9:7400", f.mgmt, http.StatusConflict},
		{"PUT", "/v1/agent/join/nonsense", f.mgmt, http.StatusBadRequest},
		{"GET", "/v1/agent/metrics", "", http.StatusForbidden},
		{"GET", "/v1/agent/metrics", reader, http.StatusOK},
		{"GET", "/v1/agent/host", reader, http.StatusForbidden},
		{"GET", "/v1/agent/host", f.token(t, `operator = "read"`), http.StatusOK},
		{"GET", "/v1/connect/ca/configuration", reader, http.StatusForbidden},
		{"GET", "/v1/agent/connect/ca/roots", "", http.StatusOK},
	} {
		req, _ := http.NewRequest(tc.method, f.base+tc.path, nil)
		req.Header.Set("X-Consul-Token", tc.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, resp.StatusCode, tc.want)
		}
	}
}
