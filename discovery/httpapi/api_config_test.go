package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/vmesh/vmesh/discovery"
)

// fakeWriter applies config entry commands straight to a store, as the
// FSM would, for API tests that do not need raft.
type fakeWriter struct {
	mu  sync.Mutex
	s   *discovery.Store
	idx uint64
}

func (w *fakeWriter) Apply(_ context.Context, cmd discovery.Command) (uint64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.idx++
	req, ok := cmd.(discovery.ConfigEntryRequest)
	if !ok {
		return 0, fmt.Errorf("fakeWriter: unexpected %T", cmd)
	}
	return w.idx, w.s.ConfigEntryApply(w.idx, req.Op, &req.Entry)
}

type fakeCluster struct{}

func (fakeCluster) Leader() (string, string) { return "127.0.0.1:7400", "n1" }

func (fakeCluster) Peers() ([]string, error) { return []string{"127.0.0.1:7400"}, nil }

func (fakeCluster) LastContact() time.Duration { return 0 }

func (fakeCluster) VerifyLeader() error { return nil }

func (fakeCluster) Stats() map[string]string { return nil }

func newConfigAPI(t *testing.T) (*api.Client, string) {
	t.Helper()
	s := discovery.NewStore()
	a := &API{Store: s, Writer: &fakeWriter{s: s, idx: 1}, Cluster: fakeCluster{}, NodeName: "n1", Datacenter: "dc1"}
	mux := http.NewServeMux()
	a.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	client, err := api.NewClient(&api.Config{Address: strings.TrimPrefix(srv.URL, "http://")})
	if err != nil {
		t.Fatal(err)
	}
	return client, srv.URL
}

// TestConfigEntriesConsulAPI drives /v1/config with consul/api's
// ConfigEntries(), as Consul users' tools do.
func TestConfigEntriesConsulAPI(t *testing.T) {
	client, base := newConfigAPI(t)
	ce := client.ConfigEntries()

	entries := []api.ConfigEntry{
		&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "web", Protocol: "http", Meta: map[string]string{"team": "a"}},
		&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "api", Protocol: "grpc"},
		&api.ServiceRouterConfigEntry{Kind: api.ServiceRouter, Name: "web", Routes: []api.ServiceRoute{{
			Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{
				PathPrefix: "/admin", Header: []api.ServiceRouteHTTPMatchHeader{{Name: "x-debug", Exact: "1"}}, Methods: []string{"GET"}}},
			Destination: &api.ServiceRouteDestination{Service: "admin", PrefixRewrite: "/", RequestTimeout: 2 * time.Second,
				NumRetries: 2, RetryOnConnectFailure: true, RetryOnStatusCodes: []uint32{503}},
		}}},
		&api.ServiceSplitterConfigEntry{Kind: api.ServiceSplitter, Name: "web", Splits: []api.ServiceSplit{
			{Weight: 90, Service: "web"}, {Weight: 10, Service: "web-v2"}}},
		&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "web", ConnectTimeout: 3 * time.Second,
			LoadBalancer: &api.LoadBalancer{Policy: "least_request", LeastRequestConfig: &api.LeastRequestConfig{ChoiceCount: 3}}},
	}
	for _, e := range entries {
		ok, _, err := ce.Set(e, nil)
		if err != nil || !ok {
			t.Fatalf("Set(%s %s) = %v, %v", e.GetKind(), e.GetName(), ok, err)
		}
	}

	got, meta, err := ce.Get(api.ServiceRouter, "web", nil)
	if err != nil {
		t.Fatal(err)
	}
	r := got.(*api.ServiceRouterConfigEntry)
	want := entries[2].(*api.ServiceRouterConfigEntry)
	if r.CreateIndex == 0 || r.ModifyIndex != r.CreateIndex || meta.LastIndex < r.ModifyIndex {
		t.Errorf("router indexes create %d modify %d, query index %d", r.CreateIndex, r.ModifyIndex, meta.LastIndex)
	}
	r.CreateIndex, r.ModifyIndex = 0, 0
	if !reflect.DeepEqual(r, want) {
		t.Errorf("Get router:\n got  %s\n want %s", jsonDump(r), jsonDump(want))
	}
	res, _, err := ce.Get(api.ServiceResolver, "web", nil)
	if err != nil {
		t.Fatal(err)
	}
	if rv := res.(*api.ServiceResolverConfigEntry); rv.ConnectTimeout != 3*time.Second || rv.LoadBalancer.LeastRequestConfig.ChoiceCount != 3 {
		t.Errorf("Get resolver = %s", jsonDump(rv))
	}

	list, _, err := ce.List(api.ServiceDefaults, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].GetName() != "api" || list[1].GetName() != "web" ||
		list[1].(*api.ServiceConfigEntry).Protocol != "http" || list[1].GetMeta()["team"] != "a" {
		t.Errorf("List(service-defaults) = %s", jsonDump(list))
	}

	// CAS: a stale index is refused with false, the current one accepted.
	cur, _, _ := ce.Get(api.ServiceDefaults, "web", nil)
	upd := &api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "web", Protocol: "http2"}
	if ok, _, err := ce.CAS(upd, cur.GetModifyIndex()-1, nil); err != nil || ok {
		t.Errorf("CAS with a stale index = %v, %v; want false", ok, err)
	}
	if ok, _, err := ce.CAS(upd, cur.GetModifyIndex(), nil); err != nil || !ok {
		t.Errorf("CAS with the current index = %v, %v; want true", ok, err)
	}

	// A blocking Get wakes on a change.
	cur, meta, _ = ce.Get(api.ServiceDefaults, "web", nil)
	done := make(chan string, 1)
	go func() {
		e, _, err := ce.Get(api.ServiceDefaults, "web", &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 5 * time.Second})
		if err != nil {
			done <- err.Error()
			return
		}
		done <- e.(*api.ServiceConfigEntry).Protocol
	}()
	time.Sleep(50 * time.Millisecond) // let it block; the answer is checked either way
	if _, _, err := ce.Set(&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "web", Protocol: "tcp"}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-done:
		if p != "tcp" {
			t.Errorf("blocking Get returned %q, want tcp", p)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("blocking Get did not wake up")
	}

	if _, err := ce.Delete(api.ServiceRouter, "web", nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ce.Get(api.ServiceRouter, "web", nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("Get after Delete: err = %v, want a 404", err)
	}
	if ok, _, err := ce.DeleteCAS(api.ServiceDefaults, "web", cur.GetModifyIndex(), nil); err != nil || ok {
		t.Errorf("DeleteCAS with a stale index = %v, %v; want false", ok, err)
	}

	// Bad input is a 400 naming the field.
	for _, tc := range []struct{ method, path, body, want string }{
		{"PUT", "/v1/config", `{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":50}]}`, "add up to 100"},
		{"PUT", "/v1/config", `{"Kind":"service-defaults","Name":"web","Protocl":"http"}`, `"Protocl"`},
		{"PUT", "/v1/config", ``, "empty body"},
		{"PUT", "/v1/config?cas=x", `{"Kind":"service-defaults","Name":"web"}`, "cas"},
		{"GET", "/v1/config/api-gateway", ``, "Kind"},
		{"GET", "/v1/config/bogus/web", ``, "Kind"},
	} {
		req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(b), tc.want) {
			t.Errorf("%s %s %s: %d %q; want 400 mentioning %q", tc.method, tc.path, tc.body, resp.StatusCode, b, tc.want)
		}
	}
}
func jsonDump(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
