package mesh

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/vmesh/vmesh/lab/testkit"
)

// TestConsulAPIClient drives a running agent with the real Consul client,
// as Consul users' tools do.
func TestConsulAPIClient(t *testing.T) {
	a := startAgent(t, testConfig(t))
	client, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}

	leader, err := client.Status().Leader()
	if err != nil || leader == "" {
		t.Fatalf("Status().Leader() = %q, %v; want a leader", leader, err)
	}
	peers, err := client.Status().Peers()
	if err != nil || len(peers) != 1 || peers[0] != leader {
		t.Fatalf("Status().Peers() = %v, %v; want [%s]", peers, err, leader)
	}
	self, err := client.Agent().Self()
	if err != nil {
		t.Fatal(err)
	}
	if got := self["Config"]["NodeName"]; got != "node-a" {
		t.Fatalf("Agent().Self() NodeName = %v, want node-a", got)
	}

	// An app whose health endpoint we flip.
	var healthy atomic.Bool
	healthy.Store(true)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if healthy.Load() {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer app.Close()

	reg := &api.AgentServiceRegistration{
		ID: "web-1", Name: "web", Tags: []string{"v1", "primary"}, Port: 8080, Address: "127.0.0.1",
		Meta: map[string]string{"version": "1"}, Weights: &api.AgentWeights{Passing: 3, Warning: 1},
		Checks: api.AgentServiceChecks{
			{CheckID: "web-ttl", Name: "web ttl", TTL: "30s"},
			{CheckID: "web-http", Name: "web http", HTTP: app.URL + "/health", Interval: "100ms", Timeout: "1s"},
		},
	}
	if err := client.Agent().ServiceRegister(reg); err != nil {
		t.Fatalf("ServiceRegister: %v", err)
	}
	if err := client.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "web-2", Name: "web", Tags: []string{"v2"}, Port: 8081}); err != nil {
		t.Fatalf("ServiceRegister web-2: %v", err)
	}

	svcs, _, err := client.Catalog().Services(nil)
	if err != nil {
		t.Fatal(err)
	}
	tags := svcs["web"]
	sort.Strings(tags)
	if len(tags) != 3 || tags[0] != "primary" || tags[1] != "v1" || tags[2] != "v2" {
		t.Fatalf("Catalog().Services() web tags = %v", tags)
	}
	insts, meta, err := client.Catalog().Service("web", "v1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(insts) != 1 || insts[0].ServiceID != "web-1" || insts[0].ServicePort != 8080 ||
		insts[0].ServiceMeta["version"] != "1" || insts[0].Node != "node-a" || insts[0].ServiceWeights.Passing != 3 {
		t.Fatalf("Catalog().Service(web, v1) = %+v", insts)
	}
	if meta.LastIndex == 0 || !meta.KnownLeader {
		t.Fatalf("QueryMeta = %+v; want an index and a known leader", meta)
	}
	nodes, _, err := client.Catalog().Nodes(nil)
	if err != nil || len(nodes) != 1 || nodes[0].Node != "node-a" {
		t.Fatalf("Catalog().Nodes() = %+v, %v", nodes, err)
	}
	local, err := client.Agent().Services()
	if err != nil || len(local) != 2 || local["web-1"].Service != "web" {
		t.Fatalf("Agent().Services() = %+v, %v", local, err)
	}

	// The TTL check starts critical: web-1 is not passing; web-2 (no
	// checks) is.
	passingIDs := func() []string {
		t.Helper()
		entries, _, err := client.Health().Service("web", "", true, nil)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, e := range entries {
			ids = append(ids, e.Service.ID)
		}
		sort.Strings(ids)
		return ids
	}
	if ids := passingIDs(); len(ids) != 1 || ids[0] != "web-2" {
		t.Fatalf("passing before TTL pass = %v, want [web-2]", ids)
	}
	if err := client.Agent().PassTTL("web-ttl", "all good"); err != nil {
		t.Fatalf("PassTTL: %v", err)
	}
	testkit.WaitFor(t, 5*time.Second, "web-1 passing", func() bool { return len(passingIDs()) == 2 })

	// The HTTP check follows the app.
	healthy.Store(false)
	testkit.WaitFor(t, 5*time.Second, "web-1 critical by HTTP check", func() bool { return len(passingIDs()) == 1 })
	checks, _, err := client.Health().Checks("web", nil)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]*api.HealthCheck{}
	for _, c := range checks {
		byID[c.CheckID] = c
	}
	if byID["web-http"] == nil || byID["web-http"].Status != api.HealthCritical || byID["web-ttl"].Status != api.HealthPassing {
		t.Fatalf("Health().Checks(web) = %+v", checks)
	}
	healthy.Store(true)
	testkit.WaitFor(t, 5*time.Second, "web-1 passing again", func() bool { return len(passingIDs()) == 2 })
	if err := client.Agent().UpdateTTL("web-ttl", "degraded", api.HealthWarning); err != nil {
		t.Fatalf("UpdateTTL: %v", err)
	}
	testkit.WaitFor(t, 5*time.Second, "web-1 out of passing on warning", func() bool { return len(passingIDs()) == 1 })
	warn, _, err := client.Health().State(api.HealthWarning, nil)
	if err != nil || len(warn) != 1 || warn[0].CheckID != "web-ttl" || warn[0].Output != "degraded" {
		t.Fatalf("Health().State(warning) = %+v, %v", warn, err)
	}

	// Blocking query: returns within 1 s of a change...
	_, meta, err = client.Health().Service("web", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		idx uint64
		err error
		at  time.Time
	}
	done := make(chan result, 1)
	go func() {
		_, m, err := client.Health().Service("web", "", false, &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 30 * time.Second})
		r := result{err: err, at: time.Now()}
		if m != nil {
			r.idx = m.LastIndex
		}
		done <- r
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case r := <-done:
		t.Fatalf("blocking query returned before any change: %+v", r)
	default:
	}
	changed := time.Now()
	if err := client.Agent().PassTTL("web-ttl", "fine again"); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil || r.idx <= meta.LastIndex {
			t.Fatalf("blocking query = %+v; want an index above %d", r, meta.LastIndex)
		}
		if lag := r.at.Sub(changed); lag > time.Second {
			t.Fatalf("blocking query returned %s after the change, want < 1s", lag)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocking query did not return after a change")
	}
	// ...and otherwise waits until wait (plus at most wait/16 of jitter).
	_, meta, err = client.KV().List("nothing-here/", nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, meta2, err := client.KV().List("nothing-here/", &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 500*time.Millisecond || took > 3*time.Second {
		t.Fatalf("idle blocking query took %s, want about 500ms", took)
	}
	if meta2.LastIndex != meta.LastIndex {
		t.Fatalf("idle blocking query index moved: %d -> %d", meta.LastIndex, meta2.LastIndex)
	}

	// KV.
	kv := client.KV()
	if _, err := kv.Put(&api.KVPair{Key: "app/config/a", Value: []byte("1"), Flags: 42}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(&api.KVPair{Key: "app/config/b", Value: []byte("2")}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(&api.KVPair{Key: "app/other", Value: []byte{0, 1, 2, 255}}, nil); err != nil {
		t.Fatal(err)
	}
	pair, _, err := kv.Get("app/config/a", nil)
	if err != nil || pair == nil || string(pair.Value) != "1" || pair.Flags != 42 {
		t.Fatalf("KV Get = %+v, %v", pair, err)
	}
	if missing, _, err := kv.Get("app/none", nil); err != nil || missing != nil {
		t.Fatalf("KV Get missing = %+v, %v; want nil, nil", missing, err)
	}
	list, _, err := kv.List("app/", nil)
	if err != nil || len(list) != 3 || string(list[2].Value) != string([]byte{0, 1, 2, 255}) {
		t.Fatalf("KV List = %+v, %v", list, err)
	}
	keys, _, err := kv.Keys("app/", "/", nil)
	if err != nil || len(keys) != 2 || keys[0] != "app/config/" || keys[1] != "app/other" {
		t.Fatalf("KV Keys(app/, /) = %v, %v", keys, err)
	}
	stale := *pair
	pair.Value = []byte("1b")
	if ok, _, err := kv.CAS(pair, nil); err != nil || !ok {
		t.Fatalf("CAS with current index = %v, %v; want true", ok, err)
	}
	stale.Value = []byte("lost update")
	if ok, _, err := kv.CAS(&stale, nil); err != nil || ok {
		t.Fatalf("CAS with stale index = %v, %v; want false", ok, err)
	}
	if got, _, _ := kv.Get("app/config/a", nil); string(got.Value) != "1b" {
		t.Fatalf("after CAS value = %q, want 1b", got.Value)
	}
	if ok, _, err := kv.CAS(&api.KVPair{Key: "app/new", Value: []byte("x"), ModifyIndex: 0}, nil); err != nil || !ok {
		t.Fatalf("CAS create-if-absent = %v, %v; want true", ok, err)
	}
	if _, err := kv.Delete("app/other", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.DeleteTree("app/config/", nil); err != nil {
		t.Fatal(err)
	}
	if list, _, _ := kv.List("app/", nil); len(list) != 1 || list[0].Key != "app/new" {
		t.Fatalf("after deletes KV List = %+v, want only app/new", list)
	}

	// Deregister.
	if err := client.Agent().ServiceDeregister("web-1"); err != nil {
		t.Fatalf("ServiceDeregister: %v", err)
	}
	insts, _, err = client.Catalog().Service("web", "", nil)
	if err != nil || len(insts) != 1 || insts[0].ServiceID != "web-2" {
		t.Fatalf("after deregister Catalog().Service(web) = %+v, %v", insts, err)
	}
	if checks, _ := client.Agent().Checks(); len(checks) != 0 {
		t.Fatalf("after deregister Agent().Checks() = %+v, want none", checks)
	}
	if err := client.Agent().ServiceDeregister("web-1"); err == nil {
		t.Fatal("deregistering an unknown ID succeeded, want 404")
	}
}

// TestRegisterThenTTLAtOnce: a registration answers only once the agent
// runs its checks, so a TTL update sent right after never finds an unknown
// check (it failed in about one try in ten when the runner learnt of the
// check from the catalog's watch only).
func TestRegisterThenTTLAtOnce(t *testing.T) {
	a := startAgent(t, testConfig(t))
	client, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		id := fmt.Sprintf("svc-%d", i)
		reg := &api.AgentServiceRegistration{ID: id, Name: "svc", Port: 9000 + i,
			Check: &api.AgentServiceCheck{CheckID: id + "-ttl", TTL: "30s"}}
		if err := client.Agent().ServiceRegister(reg); err != nil {
			t.Fatalf("registration %d: %v", i, err)
		}
		if err := client.Agent().UpdateTTL(id+"-ttl", "ok", api.HealthPassing); err != nil {
			t.Fatalf("TTL update right after registration %d: %v", i, err)
		}
	}
}

// TestTaggedAddressesKept: a service's TaggedAddresses (which the consul
// CLI and consul-esm send) are kept and served by the agent and catalog
// endpoints; a bad port among them is a 400 naming it.
func TestTaggedAddressesKept(t *testing.T) {
	a := startAgent(t, testConfig(t))
	client, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	reg := &api.AgentServiceRegistration{ID: "web-1", Name: "web", Port: 8080, Address: "10.0.0.5",
		TaggedAddresses: map[string]api.ServiceAddress{"wan": {Address: "203.0.113.5", Port: 80}, "lan_ipv4": {Address: "10.0.0.5", Port: 8080}}}
	if err := client.Agent().ServiceRegister(reg); err != nil {
		t.Fatal(err)
	}
	svc, _, err := client.Agent().Service("web-1", nil)
	if err != nil || svc.TaggedAddresses["wan"].Address != "203.0.113.5" || svc.TaggedAddresses["wan"].Port != 80 {
		t.Errorf("agent service: %+v, %v; want the wan tagged address", svc, err)
	}
	cs, _, err := client.Catalog().Service("web", "", nil)
	if err != nil || len(cs) != 1 || cs[0].ServiceTaggedAddresses["lan_ipv4"].Port != 8080 {
		t.Errorf("catalog service: %+v, %v; want the lan_ipv4 tagged address", cs, err)
	}
	reg.TaggedAddresses = map[string]api.ServiceAddress{"wan": {Address: "x", Port: 70000}}
	if err := client.Agent().ServiceRegister(reg); err == nil || !strings.Contains(err.Error(), "TaggedAddresses.wan.Port") {
		t.Errorf("a tagged address with port 70000: %v; want a 400 naming TaggedAddresses.wan.Port", err)
	}
}
