package discovery

import (
	"context"
	"encoding/json"
	"errors"
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
)

func TestDecodeConfigEntry(t *testing.T) {
	cases := []struct {
		name string
		body string
		want *ConfigEntry
		errs []string
	}{
		{
			name: "service-defaults",
			body: `{"Kind":"service-defaults","Name":"web","Protocol":"http","LocalConnectTimeoutMs":250,"Meta":{"team":"a"}}`,
			want: &ConfigEntry{Kind: KindServiceDefaults, Name: "web", Meta: map[string]string{"team": "a"},
				Defaults: &ServiceDefaults{Protocol: "http", LocalConnectTimeoutMs: 250}},
		},
		{
			name: "lower-case keys, as consul config write accepts",
			body: `{"kind":"service-defaults","name":"web","protocol":"grpc"}`,
			want: &ConfigEntry{Kind: KindServiceDefaults, Name: "web", Defaults: &ServiceDefaults{Protocol: "grpc"}},
		},
		{
			name: "service-router",
			body: `{"Kind":"service-router","Name":"web","Routes":[
				{"Match":{"HTTP":{"PathPrefix":"/admin","Header":[{"Name":"x-debug","Exact":"1"}],"Methods":["GET","POST"]}},
				 "Destination":{"Service":"admin","PrefixRewrite":"/","RequestTimeout":"2s","NumRetries":3,"RetryOnStatusCodes":[503]}},
				{"Destination":{"Service":"web"}}]}`,
			want: &ConfigEntry{Kind: KindServiceRouter, Name: "web", Router: &ServiceRouter{Routes: []ServiceRoute{
				{
					Match: &ServiceRouteMatch{HTTP: &ServiceRouteHTTPMatch{PathPrefix: "/admin",
						Header: []ServiceRouteHTTPMatchHeader{{Name: "x-debug", Exact: "1"}}, Methods: []string{"GET", "POST"}}},
					Destination: &ServiceRouteDestination{Service: "admin", PrefixRewrite: "/", RequestTimeout: Duration(2 * time.Second),
						NumRetries: 3, RetryOnStatusCodes: []uint32{503}},
				},
				{Destination: &ServiceRouteDestination{Service: "web"}},
			}}},
		},
		{
			name: "service-splitter",
			body: `{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":90},{"Weight":10,"Service":"web-v2"}]}`,
			want: &ConfigEntry{Kind: KindServiceSplitter, Name: "web", Splitter: &ServiceSplitter{Splits: []ServiceSplit{
				{Weight: 90}, {Weight: 10, Service: "web-v2"}}}},
		},
		{
			name: "splitter weights with decimals",
			body: `{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":33.33},{"Weight":33.33,"Service":"b"},{"Weight":33.34,"Service":"c"}]}`,
			want: &ConfigEntry{Kind: KindServiceSplitter, Name: "web", Splitter: &ServiceSplitter{Splits: []ServiceSplit{
				{Weight: 33.33}, {Weight: 33.33, Service: "b"}, {Weight: 33.34, Service: "c"}}}},
		},
		{
			name: "service-resolver",
			body: `{"Kind":"service-resolver","Name":"web","ConnectTimeout":"3s","LoadBalancer":{"Policy":"ring_hash",
				"RingHashConfig":{"MinimumRingSize":1024},"HashPolicies":[{"Field":"header","FieldValue":"x-user"},{"SourceIP":true}]}}`,
			want: &ConfigEntry{Kind: KindServiceResolver, Name: "web", Resolver: &ServiceResolver{
				ConnectTimeout: Duration(3 * time.Second),
				LoadBalancer: &LoadBalancer{Policy: LBRingHash, RingHashConfig: &RingHashConfig{MinimumRingSize: 1024},
					HashPolicies: []HashPolicy{{Field: "header", FieldValue: "x-user"}, {SourceIP: true}}},
			}},
		},
		{
			name: "resolver redirect",
			body: `{"Kind":"service-resolver","Name":"web","Redirect":{"Service":"web-new"}}`,
			want: &ConfigEntry{Kind: KindServiceResolver, Name: "web", Resolver: &ServiceResolver{Redirect: &ServiceResolverRedirect{Service: "web-new"}}},
		},
		// What consul/api always sends for service-defaults: empty
		// MeshGateway and Expose, zero indexes.
		{
			name: "consul/api empties",
			body: `{"Kind":"service-defaults","Name":"web","MeshGateway":{},"Expose":{},"CreateIndex":0,"ModifyIndex":0}`,
			want: &ConfigEntry{Kind: KindServiceDefaults, Name: "web", Defaults: &ServiceDefaults{}},
		},

		{name: "not JSON", body: `{"Kind":`, errs: []string{"Request decode failed"}},
		{name: "no kind", body: `{"Name":"web"}`, errs: []string{"Kind: missing"}},
		{name: "unknown kind", body: `{"Kind":"proxy-defaults","Name":"global"}`, errs: []string{`Kind: "proxy-defaults" is not supported`}},
		{name: "no name", body: `{"Kind":"service-defaults"}`, errs: []string{"Name: missing"}},
		{name: "bad name", body: `{"Kind":"service-defaults","Name":"a/b"}`, errs: []string{"Name:", "'/'"}},
		{name: "other namespace", body: `{"Kind":"service-defaults","Name":"web","Namespace":"ns1"}`, errs: []string{"Namespace"}},
		{name: "unknown field", body: `{"Kind":"service-defaults","Name":"web","Bogus":1}`, errs: []string{`"Bogus"`}},
		{name: "field of another kind", body: `{"Kind":"service-defaults","Name":"web","Splits":[]}`, errs: []string{`"Splits"`}},
		{name: "wrong type", body: `{"Kind":"service-resolver","Name":"web","ConnectTimeout":"soon"}`, errs: []string{"ConnectTimeout", `a duration such as "10s"`}},
		{name: "bad protocol", body: `{"Kind":"service-defaults","Name":"web","Protocol":"https"}`, errs: []string{`Protocol: "https" is not one of`}},
		{name: "unsupported defaults field", body: `{"Kind":"service-defaults","Name":"web","Mode":"transparent"}`, errs: []string{"Mode: not supported by vmesh"}},
		{name: "mesh gateway mode", body: `{"Kind":"service-defaults","Name":"web","MeshGateway":{"Mode":"local"}}`, errs: []string{"MeshGateway: not supported"}},
		{name: "negative limit", body: `{"Kind":"service-defaults","Name":"web","MaxInboundConnections":-1}`, errs: []string{"MaxInboundConnections"}},
		{name: "two paths", body: `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathExact":"/a","PathPrefix":"/b"}}}]}`, errs: []string{"Routes[0].Match.HTTP.PathExact", "at most one"}},
		{name: "relative path", body: `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathPrefix":"admin"}}}]}`, errs: []string{"Routes[0].Match.HTTP.PathPrefix", "start with /"}},
		{name: "bad regex", body: `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathRegex":"(a"}}}]}`, errs: []string{"Routes[0].Match.HTTP.PathRegex", "invalid regular expression"}},
		{name: "header without match", body: `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"Header":[{"Name":"x"}]}}}]}`, errs: []string{"Routes[0].Match.HTTP.Header[0].Present", "exactly one"}},
		{name: "header two matches", body: `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"Header":[{"Name":"x","Exact":"1","Prefix":"2"}]}}}]}`, errs: []string{"Header[0]"}},
		{name: "bad header name", body: `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"Header":[{"Name":"a b","Present":true}]}}}]}`, errs: []string{"Header[0].Name"}},
		{name: "bad method", body: `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"Methods":["get"]}}}]}`, errs: []string{"Methods[0]", "upper-case"}},
		{name: "rewrite without path", body: `{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"PrefixRewrite":"/"}}]}`, errs: []string{"Routes[0].Destination.PrefixRewrite"}},
		{name: "subset", body: `{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"ServiceSubset":"v2"}}]}`, errs: []string{"Routes[0].Destination.ServiceSubset", "not supported"}},
		{name: "bad status", body: `{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"RetryOnStatusCodes":[99]}}]}`, errs: []string{"RetryOnStatusCodes[0]"}},
		{name: "bad retry condition", body: `{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"RetryOn":["sometimes"]}}]}`, errs: []string{"RetryOn[0]", `"sometimes"`}},
		{name: "set host header", body: `{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"RequestHeaders":{"Set":{"Host":"x"}}}}]}`, errs: []string{"RequestHeaders.Set"}},
		{name: "no splits", body: `{"Kind":"service-splitter","Name":"web"}`, errs: []string{"Splits: at least one"}},
		{name: "weights not 100", body: `{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":90},{"Weight":20,"Service":"b"}]}`, errs: []string{"add up to 100, got 110"}},
		{name: "negative weight", body: `{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":-10},{"Weight":110,"Service":"b"}]}`, errs: []string{"Splits[0].Weight", "Splits[1].Weight"}},
		{name: "subsets", body: `{"Kind":"service-resolver","Name":"web","Subsets":{"v1":{"Filter":"Service.Meta.version == 1"}}}`, errs: []string{"Subsets: not supported"}},
		{name: "failover", body: `{"Kind":"service-resolver","Name":"web","Failover":{"*":{"Datacenters":["dc2"]}}}`, errs: []string{"Failover: not supported"}},
		{name: "redirect to datacenter", body: `{"Kind":"service-resolver","Name":"web","Redirect":{"Service":"x","Datacenter":"dc2"}}`, errs: []string{"Redirect.Datacenter", "only Redirect.Service"}},
		{name: "redirect to itself", body: `{"Kind":"service-resolver","Name":"web","Redirect":{"Service":"Web"}}`, errs: []string{"Redirect.Service", "itself"}},
		{name: "bad policy", body: `{"Kind":"service-resolver","Name":"web","LoadBalancer":{"Policy":"fastest"}}`, errs: []string{"LoadBalancer.Policy", `"fastest"`}},
		{name: "ring config on round robin", body: `{"Kind":"service-resolver","Name":"web","LoadBalancer":{"Policy":"round_robin","RingHashConfig":{"MinimumRingSize":1}}}`, errs: []string{"LoadBalancer.RingHashConfig"}},
		{name: "ring min above max", body: `{"Kind":"service-resolver","Name":"web","LoadBalancer":{"Policy":"ring_hash","RingHashConfig":{"MinimumRingSize":10,"MaximumRingSize":5}}}`, errs: []string{"MinimumRingSize"}},
		{name: "hash policy without field", body: `{"Kind":"service-resolver","Name":"web","LoadBalancer":{"Policy":"maglev","HashPolicies":[{"Terminal":true}]}}`, errs: []string{"HashPolicies[0].Field"}},
		{name: "hash policies on least request", body: `{"Kind":"service-resolver","Name":"web","LoadBalancer":{"Policy":"least_request","HashPolicies":[{"SourceIP":true}]}}`, errs: []string{"LoadBalancer.HashPolicies"}},
		{name: "negative timeout", body: `{"Kind":"service-resolver","Name":"web","ConnectTimeout":"-1s"}`, errs: []string{"ConnectTimeout: must not be negative"}},
		{name: "every problem at once", body: `{"Kind":"service-resolver","Name":"","ConnectTimeout":"-1s","DefaultSubset":"v1"}`, errs: []string{"Name: missing", "ConnectTimeout", "DefaultSubset"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeConfigEntry([]byte(tc.body))
			if len(tc.errs) > 0 {
				if err == nil {
					t.Fatalf("decoded %+v, want an error", got)
				}
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("error %v does not wrap ErrInvalid", err)
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
				t.Errorf("got  %s\nwant %s", dump(got), dump(tc.want))
			}
			// What we render decodes back to the same entry.
			out, err := json.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			again, err := DecodeConfigEntry(out)
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Errorf("round trip of %s: %+v, %v", out, again, err)
			}
		})
	}
}

func dump(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestStoreConfigEntryApply(t *testing.T) {
	s := NewStore()
	web := func(proto string, modify uint64) *ConfigEntry {
		return &ConfigEntry{Kind: KindServiceDefaults, Name: "web", Defaults: &ServiceDefaults{Protocol: proto}, ModifyIndex: modify}
	}
	steps := []struct {
		idx     uint64
		op      ConfigEntryOp
		entry   *ConfigEntry
		wantErr error
		// after the step
		proto  string // "" = absent
		create uint64
	}{
		{idx: 2, op: ConfigEntryUpsertCAS, entry: web("http", 1), wantErr: ErrCASConflict},
		{idx: 3, op: ConfigEntryUpsertCAS, entry: web("http", 0), proto: "http", create: 3},
		{idx: 4, op: ConfigEntryUpsert, entry: web("grpc", 0), proto: "grpc", create: 3},
		{idx: 5, op: ConfigEntryUpsertCAS, entry: web("tcp", 3), wantErr: ErrCASConflict, proto: "grpc", create: 3},
		{idx: 6, op: ConfigEntryUpsertCAS, entry: web("tcp", 4), proto: "tcp", create: 3},
		{idx: 7, op: ConfigEntryDeleteCAS, entry: web("", 4), wantErr: ErrCASConflict, proto: "tcp", create: 3},
		{idx: 8, op: ConfigEntryDeleteCAS, entry: web("", 6)},
		{idx: 9, op: ConfigEntryDelete, entry: web("", 0)},
		{idx: 10, op: ConfigEntryDeleteCAS, entry: web("", 0), wantErr: ErrCASConflict},
		{idx: 11, op: "rename", entry: web("", 0), wantErr: ErrInvalid},
	}
	for _, st := range steps {
		err := s.ConfigEntryApply(st.idx, st.op, st.entry)
		if !errors.Is(err, st.wantErr) || (st.wantErr == nil && err != nil) {
			t.Fatalf("step %d (%s): err = %v, want %v", st.idx, st.op, err, st.wantErr)
		}
		// The name is case-insensitive.
		_, got, err := s.ConfigEntry(nil, KindServiceDefaults, "WEB")
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case st.proto == "" && got != nil:
			t.Fatalf("step %d: entry %+v, want none", st.idx, got)
		case st.proto != "" && (got == nil || got.Defaults.Protocol != st.proto || got.CreateIndex != st.create):
			t.Fatalf("step %d: entry %+v, want protocol %s created at %d", st.idx, got, st.proto, st.create)
		}
	}
	// Writes that changed something moved the table's index; failed CAS
	// and deleting what is not there did not.
	if idx, _, _ := s.ConfigEntries(nil, ""); idx != 8 {
		t.Errorf("index = %d, want 8 (the last write that changed something)", idx)
	}
}

// fakeWriter applies config entry commands straight to a store, as the
// FSM would, for API tests that do not need raft.
type fakeWriter struct {
	mu  sync.Mutex
	s   *Store
	idx uint64
}

func (w *fakeWriter) Apply(_ context.Context, cmd Command) (uint64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.idx++
	req, ok := cmd.(ConfigEntryRequest)
	if !ok {
		return 0, fmt.Errorf("fakeWriter: unexpected %T", cmd)
	}
	return w.idx, w.s.ConfigEntryApply(w.idx, req.Op, &req.Entry)
}

type fakeCluster struct{}

func (fakeCluster) Leader() (string, string)   { return "127.0.0.1:7400", "n1" }
func (fakeCluster) Peers() ([]string, error)   { return []string{"127.0.0.1:7400"}, nil }
func (fakeCluster) LastContact() time.Duration { return 0 }
func (fakeCluster) VerifyLeader() error        { return nil }
func (fakeCluster) Stats() map[string]string   { return nil }

func newConfigAPI(t *testing.T) (*api.Client, string) {
	t.Helper()
	s := NewStore()
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
		t.Errorf("Get router:\n got  %s\n want %s", dump(r), dump(want))
	}
	res, _, err := ce.Get(api.ServiceResolver, "web", nil)
	if err != nil {
		t.Fatal(err)
	}
	if rv := res.(*api.ServiceResolverConfigEntry); rv.ConnectTimeout != 3*time.Second || rv.LoadBalancer.LeastRequestConfig.ChoiceCount != 3 {
		t.Errorf("Get resolver = %s", dump(rv))
	}

	list, _, err := ce.List(api.ServiceDefaults, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].GetName() != "api" || list[1].GetName() != "web" ||
		list[1].(*api.ServiceConfigEntry).Protocol != "http" || list[1].GetMeta()["team"] != "a" {
		t.Errorf("List(service-defaults) = %s", dump(list))
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
		{"GET", "/v1/config/ingress-gateway", ``, "Kind"},
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
