package httpapi

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/vmesh/vmesh/discovery"
)

// filterCatalog is three nodes in two racks, with web on all of them
// (one tagged canary) and db on n3.
func filterCatalog(t *testing.T) *api.Client {
	t.Helper()
	s := discovery.NewStore()
	idx := uint64(1)
	for i, rack := range []string{"a", "a", "b"} {
		name := []string{"n1", "n2", "n3"}[i]
		if err := s.EnsureNode(idx, &discovery.Node{ID: "0000000" + string(rune('1'+i)) + "-0000-0000-0000-000000000000", Name: name,
			Address: "10.0.0." + string(rune('1'+i)), Datacenter: "dc1", Meta: map[string]string{"rack": rack}}); err != nil {
			t.Fatal(err)
		}
		idx++
		tags := []string{"v1"}
		if name == "n2" {
			tags = []string{"v1", "canary"}
		}
		if err := s.EnsureService(idx, &discovery.Instance{Node: name, ID: "web-" + name, Service: "web", Port: 80, Tags: tags,
			Meta: map[string]string{"team": "front"}, Weights: discovery.Weights{Passing: 1, Warning: 1}}, nil); err != nil {
			t.Fatal(err)
		}
		idx++
	}
	if err := s.EnsureService(idx, &discovery.Instance{Node: "n3", ID: "db-1", Service: "db", Port: 5432, Weights: discovery.Weights{Passing: 1, Warning: 1}}, nil); err != nil {
		t.Fatal(err)
	}
	a := &API{Store: s, Writer: &fakeWriter{s: s, idx: 100}, Cluster: fakeCluster{}, NodeName: "n1", Datacenter: "dc1"}
	mux := http.NewServeMux()
	a.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	client, err := api.NewClient(&api.Config{Address: strings.TrimPrefix(srv.URL, "http://")})
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// TestFilterPrometheusConsulSD sends what Prometheus' consul_sd_configs
// sends with `filter:` and `node_meta:` set (through consul/api, as
// Prometheus does): the service list, then each service's health, both
// with ?filter=, ?node-meta= and ?stale.
func TestFilterPrometheusConsulSD(t *testing.T) {
	c := filterCatalog(t)
	opts := &api.QueryOptions{AllowStale: true, NodeMeta: map[string]string{"rack": "a"}, Filter: `"canary" in ServiceTags`}
	services, _, err := c.Catalog().Services(opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(services) != 1 || !slices.Contains(services["web"], "canary") {
		t.Errorf("catalog services with rack a and a canary filter: %v; want web only", services)
	}
	entries, _, err := c.Health().ServiceMultipleTags("web", nil, false, &api.QueryOptions{AllowStale: true,
		NodeMeta: map[string]string{"rack": "a"}, Filter: `Service.Meta.team == "front" and "canary" not in Service.Tags`})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Node.Node != "n1" {
		t.Errorf("health of web in rack a without canary: %d entries; want n1's", len(entries))
	}
	nodes, _, err := c.Catalog().Nodes(&api.QueryOptions{NodeMeta: map[string]string{"rack": "b"}})
	if err != nil || len(nodes) != 1 || nodes[0].Node != "n3" {
		t.Errorf("nodes in rack b: %v, %v; want n3", nodes, err)
	}
	svc, _, err := c.Catalog().Service("web", "", &api.QueryOptions{Filter: `Node == "n2" or Node == "n3"`})
	var got []string
	for _, s := range svc {
		got = append(got, s.Node)
	}
	sort.Strings(got)
	if err != nil || strings.Join(got, ",") != "n2,n3" {
		t.Errorf("catalog service web filtered to n2, n3: %v, %v", got, err)
	}
	if _, _, err := c.Catalog().Nodes(&api.QueryOptions{Filter: `Node ==`}); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("a broken filter: %v; want 400", err)
	}
	if _, _, err := c.KV().List("x", &api.QueryOptions{Filter: `Key == "x"`}); err == nil || !strings.Contains(err.Error(), "filter") {
		t.Errorf("?filter on an endpoint without it: %v; want 400 naming filter", err)
	}
	ns, _, err := c.Catalog().NodeServiceList("n3", &api.QueryOptions{Filter: `Service == "db"`})
	if err != nil || ns == nil || len(ns.Services) != 1 || ns.Services[0].ID != "db-1" {
		t.Errorf("node-services of n3 filtered to db: %+v, %v", ns, err)
	}
	dcs, err := c.Catalog().Datacenters()
	if err != nil || len(dcs) != 1 || dcs[0] != "dc1" {
		t.Errorf("datacenters: %v, %v; want [dc1]", dcs, err)
	}
}

// TestUnimplementedAndDC: an endpoint vmesh lacks is a 404 with Consul's
// read headers; ?dc= naming another datacenter is refused on /v1/status
// as on every read.
func TestUnimplementedAndDC(t *testing.T) {
	s := discovery.NewStore()
	a := &API{Store: s, Writer: &fakeWriter{s: s, idx: 1}, Cluster: fakeCluster{}, NodeName: "n1", Datacenter: "dc1"}
	mux := http.NewServeMux()
	a.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL + "/v1/no/such/endpoint")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || resp.Header.Get("X-Consul-Index") == "" || resp.Header.Get("X-Consul-KnownLeader") == "" {
		t.Errorf("unimplemented endpoint: %s, headers %v; want 404 with X-Consul-Index and X-Consul-KnownLeader", resp.Status, resp.Header)
	}
	for _, path := range []string{"/v1/status/leader?dc=dc2", "/v1/status/peers?dc=dc2"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusInternalServerError {
			t.Errorf("%s: %s; want 500 No path to datacenter", path, resp.Status)
		}
	}
}
