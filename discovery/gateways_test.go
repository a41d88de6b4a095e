package discovery

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// TestGatewayEntryValidation: the gateway kinds are checked as Consul
// checks them, every problem a 400 (ErrInvalid) naming its field.
func TestGatewayEntryValidation(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		errs       []string
	}{
		{"listener protocol", `{"Kind":"ingress-gateway","Name":"in","Listeners":[{"Port":80,"Protocol":"udp","Services":[{"Name":"web"}]}]}`,
			[]string{"Listeners[0].Protocol", `"udp"`}},
		{"service name missing", `{"Kind":"ingress-gateway","Name":"in","Listeners":[{"Port":80,"Services":[{"Hosts":[]}]}]}`,
			[]string{"Listeners[0].Services[0].Name: missing"}},
		{"no service", `{"Kind":"ingress-gateway","Name":"in","Listeners":[{"Port":80,"Protocol":"http","Services":[]}]}`,
			[]string{"Listeners[0].Services"}},
		{"port twice", `{"Kind":"ingress-gateway","Name":"in","Listeners":[{"Port":80,"Services":[{"Name":"a"}]},{"Port":80,"Services":[{"Name":"b"}]}]}`,
			[]string{"Listeners[1].Port", "two listeners"}},
		{"port range", `{"Kind":"ingress-gateway","Name":"in","Listeners":[{"Port":70000,"Services":[{"Name":"a"}]}]}`,
			[]string{"Listeners[0].Port"}},
		{"two services on tcp", `{"Kind":"ingress-gateway","Name":"in","Listeners":[{"Port":80,"Services":[{"Name":"a"},{"Name":"b"}]}]}`,
			[]string{"Listeners[0].Services", "one service"}},
		{"wildcard on tcp", `{"Kind":"ingress-gateway","Name":"in","Listeners":[{"Port":80,"Services":[{"Name":"*"}]}]}`,
			[]string{"Listeners[0].Services[0].Name", "wildcard"}},
		{"hosts on tcp", `{"Kind":"ingress-gateway","Name":"in","Listeners":[{"Port":80,"Services":[{"Name":"a","Hosts":["a.example.com"]}]}]}`,
			[]string{"Listeners[0].Services[0].Hosts"}},
		{"hosts on a wildcard", `{"Kind":"ingress-gateway","Name":"in","Listeners":[{"Port":80,"Protocol":"http","Services":[{"Name":"*","Hosts":["a.example.com"]}]}]}`,
			[]string{"Listeners[0].Services[0].Hosts"}},
		{"bad host", `{"Kind":"ingress-gateway","Name":"in","Listeners":[{"Port":80,"Protocol":"http","Services":[{"Name":"a","Hosts":["a.*.example.com"]}]}]}`,
			[]string{"Listeners[0].Services[0].Hosts[0]", "leftmost"}},
		{"star host with TLS", `{"Kind":"ingress-gateway","Name":"in","TLS":{"Enabled":true},"Listeners":[{"Port":80,"Protocol":"http","Services":[{"Name":"a","Hosts":["*"]}]}]}`,
			[]string{"Listeners[0].Services[0].Hosts[0]", "TLS"}},
		{"same host twice", `{"Kind":"ingress-gateway","Name":"in","Listeners":[{"Port":80,"Protocol":"http","Services":[{"Name":"a","Hosts":["x.example.com"]},{"Name":"b","Hosts":["x.example.com"]}]}]}`,
			[]string{"Listeners[0].Services[1].Hosts[0]", "unique"}},
		{"service twice", `{"Kind":"ingress-gateway","Name":"in","Listeners":[{"Port":80,"Protocol":"http","Services":[{"Name":"a"},{"Name":"A"}]}]}`,
			[]string{"Listeners[0].Services[1].Name", "twice"}},
		{"TLS version", `{"Kind":"ingress-gateway","Name":"in","TLS":{"TLSMinVersion":"TLSv9"}}`,
			[]string{"TLS.TLSMinVersion", `"TLSv9"`}},
		{"TLS max below min", `{"Kind":"ingress-gateway","Name":"in","TLS":{"TLSMinVersion":"TLSv1_3","TLSMaxVersion":"TLSv1_2"}}`,
			[]string{"TLS.TLSMaxVersion"}},
		{"cipher suites with TLS 1.3", `{"Kind":"ingress-gateway","Name":"in","TLS":{"TLSMinVersion":"TLSv1_3","CipherSuites":["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]}}`,
			[]string{"TLS.CipherSuites"}},
		{"unknown cipher suite", `{"Kind":"ingress-gateway","Name":"in","Listeners":[{"Port":80,"Services":[{"Name":"a"}],"TLS":{"CipherSuites":["RC4"]}}]}`,
			[]string{"Listeners[0].TLS.CipherSuites[0]"}},
		{"SDS certificate without cluster", `{"Kind":"ingress-gateway","Name":"in","TLS":{"SDS":{"CertResource":"c"}}}`,
			[]string{"TLS.SDS.ClusterName"}},
		{"service certificate without hosts", `{"Kind":"ingress-gateway","Name":"in","Listeners":[{"Port":80,"Protocol":"http","Services":[{"Name":"a","TLS":{"SDS":{"ClusterName":"s","CertResource":"c"}}}]}]}`,
			[]string{"Listeners[0].Services[0].TLS.SDS.CertResource"}},
		{"headers on tcp", `{"Kind":"ingress-gateway","Name":"in","Listeners":[{"Port":80,"Services":[{"Name":"a","RequestHeaders":{"Set":{"x":"y"}}}]}]}`,
			[]string{"Listeners[0].Services[0].RequestHeaders"}},
		{"percentage", `{"Kind":"ingress-gateway","Name":"in","Defaults":{"PassiveHealthCheck":{"MaxEjectionPercent":101}}}`,
			[]string{"Defaults.PassiveHealthCheck.MaxEjectionPercent"}},
		{"namespace", `{"Kind":"ingress-gateway","Name":"in","Listeners":[{"Port":80,"Services":[{"Name":"a","Namespace":"team"}]}]}`,
			[]string{"Listeners[0].Services[0].Namespace"}},
		{"unknown field", `{"Kind":"ingress-gateway","Name":"in","Listners":[]}`, []string{`"Listners"`}},
		{"gateway name missing", `{"Kind":"terminating-gateway","Services":[{"Name":"a"}]}`, []string{"Name: missing"}},
		{"linked service name missing", `{"Kind":"terminating-gateway","Name":"t","Services":[{"CAFile":"ca.pem"}]}`,
			[]string{"Services[0].Name: missing"}},
		{"client certificate without CA", `{"Kind":"terminating-gateway","Name":"t","Services":[{"Name":"a","CertFile":"c.pem","KeyFile":"k.pem"}]}`,
			[]string{"Services[0].CertFile", "CAFile"}},
		{"linked service twice", `{"Kind":"terminating-gateway","Name":"t","Services":[{"Name":"a"},{"Name":"a"}]}`,
			[]string{"Services[1].Name", "twice"}},
		{"meta key", `{"Kind":"terminating-gateway","Name":"t","Meta":{"":"x"}}`, []string{"Meta"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeConfigEntry([]byte(tc.body))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v; want ErrInvalid", err)
			}
			for _, want := range tc.errs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("err = %v; want it to mention %q", err, want)
				}
			}
		})
	}
}

const (
	ingressBody = `{"Kind":"ingress-gateway","Name":"ingress","Meta":{"team":"edge"},
		"TLS":{"Enabled":true,"TLSMinVersion":"TLSv1_2","CipherSuites":["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]},
		"Defaults":{"MaxConnections":2048,"PassiveHealthCheck":{"Interval":500000000,"MaxFailures":20}},
		"Listeners":[
			{"Port":8888,"Services":[{"Name":"api"}]},
			{"Port":9999,"Protocol":"HTTP","Services":[
				{"Name":"web","Hosts":["web.example.com","*.web.example.com"],"RequestHeaders":{"Set":{"x-a":"b"}},"MaxConnections":10},
				{"Name":"*"}]}]}`
	terminatingBody = `{"Kind":"terminating-gateway","Name":"egress","Services":[
		{"Name":"billing","CAFile":"b/ca.pem","CertFile":"b/c.pem","KeyFile":"b/k.pem","SNI":"billing.example"},
		{"Name":"*","CAFile":"ca.pem"}]}`
)

func decodeEntry(t *testing.T, body string) *ConfigEntry {
	t.Helper()
	e, err := DecodeConfigEntry([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestGatewayEntryRoundTrip: an entry is normalized as Consul normalizes
// it (a listener's protocol defaults to tcp and is lower-cased), stored,
// and served back in Consul's shape with every field it was written with.
func TestGatewayEntryRoundTrip(t *testing.T) {
	s := NewStore()
	for i, body := range []string{ingressBody, terminatingBody} {
		e := decodeEntry(t, body)
		stMust(t, s.ConfigEntryApply(uint64(10+i), ConfigEntryUpsert, e))
		_, got, err := s.ConfigEntry(nil, e.Kind, e.Name)
		if err != nil || got == nil {
			t.Fatalf("read back %s: %v, %v", e.Name, got, err)
		}
		out, err := json.Marshal(got)
		if err != nil {
			t.Fatal(err)
		}
		// What is served decodes to the same entry, indexes aside.
		again := decodeEntry(t, string(out))
		again.CreateIndex, again.ModifyIndex = got.CreateIndex, got.ModifyIndex
		if !reflect.DeepEqual(again, got) {
			t.Errorf("%s served as %s, which reads back as %+v; stored %+v", e.Name, out, again, got)
		}
		var m map[string]any
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatal(err)
		}
		if m["Kind"] != e.Kind || m["Name"] != e.Name || m["ModifyIndex"] != float64(10+i) {
			t.Errorf("served header: %s", out)
		}
	}
	_, in, _ := s.ConfigEntry(nil, KindIngressGateway, "ingress")
	if p := []string{in.Ingress.Listeners[0].Protocol, in.Ingress.Listeners[1].Protocol}; !reflect.DeepEqual(p, []string{"tcp", "http"}) {
		t.Errorf("listener protocols %v; want [tcp http]", p)
	}
	if in.Ingress.Defaults.PassiveHealthCheck.Interval != Duration(500e6) || in.Ingress.Listeners[1].Services[0].MaxConnections != 10 ||
		in.Meta["team"] != "edge" || in.Ingress.TLS.CipherSuites[0] != "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" {
		t.Errorf("stored ingress entry lost fields: %+v", in.Ingress)
	}
	_, term, _ := s.ConfigEntry(nil, KindTerminatingGateway, "egress")
	if l := term.Terminating.Services[0]; l.SNI != "billing.example" || l.KeyFile != "b/k.pem" {
		t.Errorf("stored terminating entry lost fields: %+v", l)
	}

	// A gateway is of one kind, as in Consul.
	clash := decodeEntry(t, `{"Kind":"terminating-gateway","Name":"Ingress"}`)
	if err := s.ConfigEntryApply(20, ConfigEntryUpsert, clash); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "ingress-gateway") {
		t.Errorf("a terminating-gateway named like an ingress-gateway: %v; want ErrInvalid", err)
	}
}

// gatewayCatalog: n1 is an agent's node, ext an external node.
//
//	n1:  web (typical), api (typical), consul (a server's own), in-gw (ingress-gateway record)
//	ext: db (typical), legacy (Connect-native), pay (typical) and pay-proxy (connect-proxy for pay)
func gatewayCatalog(t *testing.T) *Store {
	t.Helper()
	s := NewStore()
	stNode(t, s, 1, "n1")
	stMust(t, s.CatalogRegister(2, &CatalogRegisterRequest{Node: Node{Name: "ext", Address: "192.0.2.1"},
		Service: &Instance{ID: "db", Service: "db", Port: 5432}}))
	for i, in := range []*Instance{
		{Node: "n1", ID: "web", Service: "web", Port: 80},
		{Node: "n1", ID: "api", Service: "api", Port: 81},
		{Node: "n1", ID: "consul", Service: ServerServiceName, Port: 8300, Source: SourceServer},
		{Node: "n1", ID: "in-gw", Service: "in-gw", Port: 8443, Kind: KindIngressGateway},
		{Node: "ext", ID: "legacy", Service: "legacy", Port: 9000, ConnectNative: true},
		{Node: "ext", ID: "pay", Service: "pay", Port: 7000},
		{Node: "ext", ID: "pay-proxy", Service: "pay-proxy", Port: 21000, Kind: KindConnectProxy, Proxy: &ConnectProxyConfig{DestinationServiceName: "pay"}},
	} {
		stMust(t, s.EnsureService(uint64(3+i), in, nil))
	}
	return s
}

func linkNames(gs []*GatewayService) []string {
	var out []string
	for _, g := range gs {
		s := g.Service.Name
		if g.FromWildcard {
			s += "*"
		}
		out = append(out, s)
	}
	return out
}

// TestGatewayServices: a gateway's links are the services its entry
// names, then those a "*" covers: for an ingress gateway the services
// with a Connect endpoint, for a terminating gateway those with an
// instance that is not Connect-native; never the servers' consul, never
// a record, never one the entry names itself.
func TestGatewayServices(t *testing.T) {
	s := gatewayCatalog(t)
	stMust(t, s.ConfigEntryApply(20, ConfigEntryUpsert, decodeEntry(t, ingressBody)))
	stMust(t, s.ConfigEntryApply(21, ConfigEntryUpsert, decodeEntry(t, terminatingBody)))

	idx, in, err := s.GatewayServices(nil, "ingress")
	if err != nil {
		t.Fatal(err)
	}
	// web is named on 9999, so the wildcard does not add it there; pay has
	// a connect-proxy record; db and legacy are external without one
	// (legacy is native: it is a Connect endpoint).
	if got, want := linkNames(in), []string{"api", "api*", "legacy*", "pay*", "web"}; !reflect.DeepEqual(got, want) {
		t.Errorf("ingress links %v; want %v", got, want)
	}
	if idx < 21 {
		t.Errorf("index %d; want at least the entries' 21", idx)
	}
	api := in[0]
	if api.GatewayKind != KindIngressGateway || api.Port != 8888 || api.Protocol != "tcp" || api.Gateway.Name != "ingress" || api.ModifyIndex != 20 {
		t.Errorf("api's link: %+v", api)
	}
	if web := in[4]; !reflect.DeepEqual(web.Hosts, []string{"web.example.com", "*.web.example.com"}) || web.Port != 9999 || web.Protocol != "http" {
		t.Errorf("web's link: %+v", web)
	}

	_, term, err := s.GatewayServices(nil, "EGRESS")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := linkNames(term), []string{"api*", "billing", "db*", "pay*", "web*"}; !reflect.DeepEqual(got, want) {
		t.Errorf("terminating links %v; want %v", got, want)
	}
	for _, g := range term {
		wantKind := GatewayServiceKindService
		if g.Service.Name == "billing" {
			wantKind = "" // not in the catalog
		}
		if g.ServiceKind != wantKind || g.GatewayKind != KindTerminatingGateway {
			t.Errorf("%s: ServiceKind %q GatewayKind %q", g.Service.Name, g.ServiceKind, g.GatewayKind)
		}
	}
	if b := term[1]; b.CAFile != "b/ca.pem" || b.SNI != "billing.example" || b.FromWildcard {
		t.Errorf("billing's link: %+v", b)
	}
	if d := term[2]; d.CAFile != "ca.pem" || d.CertFile != "" {
		t.Errorf("db's link takes the wildcard's TLS: %+v", d)
	}

	// A service registered later is covered at once, as Consul's
	// wildcard is.
	stMust(t, s.EnsureService(30, &Instance{Node: "n1", ID: "late", Service: "late", Port: 82}, nil))
	_, term, _ = s.GatewayServices(nil, "egress")
	if got := linkNames(term); !strings.Contains(strings.Join(got, ","), "late*") {
		t.Errorf("terminating links after late registered: %v", got)
	}
	if _, none, err := s.GatewayServices(nil, "web"); err != nil || len(none) != 0 {
		t.Errorf("links of a name with no gateway entry: %v, %v", none, err)
	}
}

// TestIngressCheckServiceNodes: the ingress-gateway instances named like
// an entry that exposes the service, by name or by a wildcard; not for a
// service no entry exposes.
func TestIngressCheckServiceNodes(t *testing.T) {
	s := gatewayCatalog(t)
	stMust(t, s.EnsureService(15, &Instance{Node: "n1", ID: "in-gw-typical", Service: "in-gw", Port: 9443}, nil))
	stMust(t, s.ConfigEntryApply(20, ConfigEntryUpsert, decodeEntry(t,
		`{"Kind":"ingress-gateway","Name":"in-gw","Listeners":[{"Port":80,"Services":[{"Name":"web"}]},{"Port":81,"Protocol":"http","Services":[{"Name":"*"}]}]}`)))
	for _, tc := range []struct {
		service string
		want    int
	}{{"web", 1}, {"WEB", 1}, {"pay", 1}, {"db", 0}, {"nothing", 0}} {
		idx, got, err := s.IngressCheckServiceNodes(nil, tc.service, nil, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != tc.want || (tc.want == 1 && got[0].Instance.ID != "in-gw") {
			t.Errorf("ingress of %s: %+v; want %d ingress-gateway instance(s)", tc.service, got, tc.want)
		}
		if idx < 20 {
			t.Errorf("index %d; want the entry's 20 at least", idx)
		}
	}
}

// TestGatewayEntriesLeftOutOfTheMesh: MeshState, what the data plane is
// built from, is the same with gateway entries as without them.
func TestGatewayEntriesLeftOutOfTheMesh(t *testing.T) {
	s := gatewayCatalog(t)
	stMust(t, s.ConfigEntryApply(20, ConfigEntryUpsert, &ConfigEntry{Kind: KindServiceDefaults, Name: "web", Defaults: &ServiceDefaults{Protocol: "http"}}))
	before, err := s.MeshState(nil)
	if err != nil {
		t.Fatal(err)
	}
	stMust(t, s.ConfigEntryApply(21, ConfigEntryUpsert, decodeEntry(t, ingressBody)))
	stMust(t, s.ConfigEntryApply(22, ConfigEntryUpsert, decodeEntry(t, terminatingBody)))
	after, err := s.MeshState(nil)
	if err != nil {
		t.Fatal(err)
	}
	before.Index, after.Index = 0, 0
	if !reflect.DeepEqual(before, after) {
		t.Errorf("MeshState changed by gateway entries: %d config entries before, %d after", len(before.ConfigEntries), len(after.ConfigEntries))
	}
	if _, names, _ := s.ServiceNames(nil); strings.Contains(strings.Join(names, ","), "ingress") {
		t.Errorf("a gateway entry's name got a VIP: %v", names)
	}
}
