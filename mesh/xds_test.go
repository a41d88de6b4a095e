package mesh

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/vmesh/vmesh/lab/testkit"
	"github.com/vmesh/vmesh/mesh/cli"

	bootstrap "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/hashicorp/consul/api"
	"github.com/vmesh/vmesh/dataplane/xds"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

func adsStream(t *testing.T, target string) discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient {
	return adsStreamToken(t, target, "")
}

// adsStreamToken is adsStream with an ACL token in the stream's metadata
// (the TCP listener wants one).
func adsStreamToken(t *testing.T, target, token string) discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient {
	t.Helper()
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, xds.TokenHeader, token)
	}
	s, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func listenerNames(t *testing.T, resp *discoverygrpc.DiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, a := range resp.GetResources() {
		var l listener.Listener
		if err := a.UnmarshalTo(&l); err != nil {
			t.Fatal(err)
		}
		out = append(out, l.GetName())
	}
	slices.Sort(out)
	return out
}

// TestAgentServesXDS: a running agent serves its catalog as xDS on its unix
// socket (to this host's proxy) and TCP (to a proxyless app), shows both
// clients on /v1/vmesh/xds/clients and /config_dump, and prints an Envoy
// bootstrap that points at itself.
func TestAgentServesXDS(t *testing.T) {
	cfg := testConfig(t)
	cfg.Addresses.XDS, cfg.Addresses.Admin = "127.0.0.1:0", "127.0.0.1:0"
	a := startAgent(t, cfg)
	base := "http://" + a.HTTPAddr()
	if code, body := testkit.HTTPDo(t, http.MethodPut, base+"/v1/agent/service/register", `{"ID":"orders-1","Name":"orders","Port":9000,
		"Meta":{"protocol":"grpc"},"Connect":{"SidecarService":{"Proxy":{"Upstreams":[{"DestinationName":"users","LocalBindPort":19001}]}}}}`); code != 200 {
		t.Fatalf("register: %d %s", code, body)
	}
	addrs := a.XDSAddrs()
	if len(addrs) != 2 || addrs[0].Network() != "unix" || addrs[1].Network() != "tcp" {
		t.Fatalf("xDS addresses = %v, want the unix socket and TCP", addrs)
	}

	// This host's proxy, on the socket.
	mesh := adsStream(t, "unix://"+addrs[0].String())
	if err := mesh.Send(&discoverygrpc.DiscoveryRequest{Node: &core.Node{Id: "node-a"}, TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}
	want := []string{"vmesh/inbound", "vmesh/outbound", "vmesh/upstream/127.0.0.1:19001"}
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := mesh.Recv()
		if err != nil {
			t.Fatal(err)
		}
		got := listenerNames(t, resp)
		if slices.Equal(got, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node-a listeners = %v, want %v", got, want)
		}
		// An earlier catalog (before the registration landed): ACK, wait.
		mesh.Send(&discoverygrpc.DiscoveryRequest{TypeUrl: resource.ListenerType, VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce})
	}

	// SDS over the same stream: the CA roots, the node's leaf and one leaf
	// per local service, all from the cluster CA.
	secretNames := []string{"vmesh/node", "vmesh/roots", "vmesh/svc/orders"}
	if err := mesh.Send(&discoverygrpc.DiscoveryRequest{TypeUrl: resource.SecretType, ResourceNames: secretNames}); err != nil {
		t.Fatal(err)
	}
	secrets := map[string]*tlsv3.Secret{}
	for len(secrets) < 3 {
		resp, err := mesh.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetTypeUrl() != resource.SecretType {
			continue
		}
		for _, r := range resp.GetResources() {
			var sec tlsv3.Secret
			if err := r.UnmarshalTo(&sec); err != nil {
				t.Fatal(err)
			}
			secrets[sec.GetName()] = &sec
		}
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(secrets["vmesh/roots"].GetValidationContext().GetTrustedCa().GetInlineBytes()) {
		t.Fatal("vmesh/roots holds no CA certificate")
	}
	for name, wantURI := range map[string]string{"vmesh/svc/orders": "spiffe://vmesh.local/svc/orders", "vmesh/node": "spiffe://vmesh.local/proxy/node-a"} {
		tc := secrets[name].GetTlsCertificate()
		pair, err := tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		leaf, _ := x509.ParseCertificate(pair.Certificate[0])
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s does not verify against vmesh/roots: %v", name, err)
		}
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != wantURI {
			t.Errorf("%s names %v, want %s", name, leaf.URIs, wantURI)
		}
	}

	// A proxyless gRPC app, over TCP, asks for the orders listener only;
	// it needs a token there (any valid one reads listeners).
	acli, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	boot, _, err := acli.ACL().Bootstrap()
	if err != nil {
		t.Fatal(err)
	}
	app := adsStreamToken(t, addrs[1].String(), boot.SecretID)
	if err := app.Send(&discoverygrpc.DiscoveryRequest{Node: &core.Node{Id: "orders-app", UserAgentName: "gRPC Go"},
		TypeUrl: resource.ListenerType, ResourceNames: []string{"orders"}}); err != nil {
		t.Fatal(err)
	}
	resp, err := app.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := listenerNames(t, resp); !slices.Equal(got, []string{"orders"}) {
		t.Fatalf("proxyless listeners = %v, want the orders api_listener", got)
	}

	var clients []struct {
		Node      string
		Mesh      bool
		Proxyless bool
	}
	testkit.GetJSON(t, a.HTTPAddr(), "/v1/vmesh/xds/clients", &clients)
	if len(clients) != 2 || clients[0].Node != "node-a" || !clients[0].Mesh || clients[1].Node != "orders-app" || !clients[1].Proxyless {
		t.Errorf("clients = %+v", clients)
	}
	for _, url := range []string{"http://" + a.AdminAddr() + "/xds/config_dump", base + "/v1/vmesh/xds/config_dump"} {
		code, body := testkit.HTTPDo(t, http.MethodGet, url, "")
		if strings.Contains(body, "PRIVATE KEY") || !strings.Contains(body, "[redacted]") || !strings.Contains(body, "vmesh/svc/orders") {
			t.Errorf("GET %s: the dump must list secrets with their private keys redacted", url)
		}
		if code != 200 || !json.Valid([]byte(body)) || !strings.Contains(body, `"node-a"`) || !strings.Contains(body, `"orders-app"`) ||
			!strings.Contains(body, "vmesh/upstream/127.0.0.1:19001") {
			t.Errorf("GET %s = %d %.300s", url, code, body)
		}
	}

	// vmesh envoy bootstrap: a valid Envoy bootstrap, node-a by default,
	// over the socket; --tcp and --node change both.
	for _, tc := range []struct {
		args       []string
		node, addr string
	}{
		{nil, "node-a", addrs[0].String()},
		{[]string{"--node", "edge-envoy", "--tcp", "--admin-bind", "127.0.0.1:19100"}, "edge-envoy", addrs[1].String()},
	} {
		code, out, errs := runCLI(t, append([]string{"envoy", "bootstrap", "--http-addr", a.HTTPAddr()}, tc.args...)...)
		if code != 0 {
			t.Fatalf("envoy bootstrap %v = %d %s", tc.args, code, errs)
		}
		var b bootstrap.Bootstrap
		if err := protojson.Unmarshal([]byte(out), &b); err != nil {
			t.Fatalf("the bootstrap does not unmarshal into Envoy's Bootstrap: %v\n%s", err, out)
		}
		if err := b.ValidateAll(); err != nil {
			t.Fatalf("the bootstrap fails ValidateAll: %v", err)
		}
		ep := b.GetStaticResources().GetClusters()[0].GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress()
		got := ep.GetPipe().GetPath()
		if sa := ep.GetSocketAddress(); sa != nil {
			got = sa.GetAddress() + ":" + jsonNumber(uint64(sa.GetPortValue()))
		}
		if b.GetNode().GetId() != tc.node || got != tc.addr || b.GetDynamicResources().GetAdsConfig() == nil {
			t.Errorf("bootstrap %v: node %q, xDS at %q; want %q at %q", tc.args, b.GetNode().GetId(), got, tc.node, tc.addr)
		}
	}
	if code, _, errs := runCLI(t, "envoy", "bootstrap", "--http-addr", a.HTTPAddr(), "--admin-bind", "nope"); code != cli.ExitUsage || !strings.Contains(errs, "admin-bind") {
		t.Errorf("bad --admin-bind = %d %q", code, errs)
	}
	if code, _, _ := runCLI(t, "envoy"); code != cli.ExitUsage {
		t.Errorf("envoy without a subcommand = %d, want usage", code)
	}
}

// TestXDSTCPTokens: the TCP xDS listener refuses a stream without a token,
// and a token that writes only web receives web's certificate and the CA
// roots, not another service's key nor the node's.
func TestXDSTCPTokens(t *testing.T) {
	cfg := testConfig(t)
	cfg.ACL.DefaultPolicy = "deny"
	cfg.Addresses.XDS, cfg.Addresses.Admin = "127.0.0.1:0", "127.0.0.1:0"
	a := startAgent(t, cfg)
	anon, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	boot, _, err := anon.ACL().Bootstrap()
	if err != nil {
		t.Fatal(err)
	}
	root, _ := api.NewClient(&api.Config{Address: a.HTTPAddr(), Token: boot.SecretID})
	for _, name := range []string{"web", "api"} {
		if err := root.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: name + "-1", Name: name, Port: 9000}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := root.ACL().PolicyCreate(&api.ACLPolicy{Name: "web", Rules: `service "web" { policy = "write" }`}, nil); err != nil {
		t.Fatal(err)
	}
	web, _, err := root.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{Name: "web"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tcp := a.XDSAddrs()[1].String()
	ask := &discoverygrpc.DiscoveryRequest{Node: &core.Node{Id: "node-a"}, TypeUrl: resource.SecretType,
		ResourceNames: []string{"vmesh/node", "vmesh/roots", "vmesh/svc/web", "vmesh/svc/api"}}

	noToken := adsStreamToken(t, tcp, "")
	noToken.Send(ask)
	if _, err := noToken.Recv(); status.Code(err) != codes.Unauthenticated {
		t.Errorf("TCP stream without a token: %v; want Unauthenticated", err)
	}
	bad := adsStreamToken(t, tcp, "not-a-token")
	bad.Send(ask)
	if _, err := bad.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Errorf("TCP stream with an unknown token: %v; want PermissionDenied", err)
	}

	s := adsStreamToken(t, tcp, web.SecretID)
	if err := s.Send(ask); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	testkit.WaitFor(t, 10*time.Second, "web's secrets over TCP", func() bool {
		resp, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		clear(got)
		for _, r := range resp.GetResources() {
			var sec tlsv3.Secret
			if err := r.UnmarshalTo(&sec); err != nil {
				t.Fatal(err)
			}
			got[sec.GetName()] = true
		}
		s.Send(&discoverygrpc.DiscoveryRequest{TypeUrl: resource.SecretType, ResourceNames: ask.ResourceNames, VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce})
		return got["vmesh/svc/web"]
	})
	if !got["vmesh/roots"] || got["vmesh/svc/api"] || got["vmesh/node"] {
		t.Errorf("secrets for the web token over TCP: %v; want web's and the roots only", got)
	}
}
