package e2e

import (
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/vmesh/vmesh/lab/testkit"
)

// TestCatalogOwnNodeProcesses: a client agent takes a catalog
// registration of its own node as its own registration, forwarded to the
// leader with its node certificate: a connect-proxy record with its
// Proxy block and a typical service with a status-only check reach the
// server's catalog and the client's /v1/agent/services; the check keeps
// its status across the client's restart; a registration naming the
// server's node through the client is refused (403); the catalog
// deregistrations remove the service on every agent.
func TestCatalogOwnNodeProcesses(t *testing.T) {
	skipShort(t)
	t.Parallel()
	srv := newNode(t, "n1", "127.51.0.1").start("-bootstrap")
	testkit.WaitFor(t, 15*time.Second, "n1 leads", func() bool { return srv.leader() != "" })
	cl := newClientNode(t, "c1", "127.51.0.11").start("-join", srv.clusterAddr(), "-token-file", srv.tokenFile("1h"))
	testkit.WaitFor(t, 20*time.Second, "c1 knows the leader", func() bool { return cl.leader() != "" })
	cs, cc := consulClient(t, srv), consulClient(t, cl)

	proxy := &api.AgentService{Kind: api.ServiceKindConnectProxy, ID: "web-proxy1", Service: "web-proxy", Port: 8001,
		Proxy: &api.AgentServiceConnectProxyConfig{DestinationServiceName: "web", DestinationServiceID: "web1",
			LocalServiceAddress: "127.0.0.2", LocalServicePort: 8080,
			Upstreams: []api.Upstream{{DestinationName: "db", LocalBindPort: 9191}}}}
	testkit.WaitFor(t, 20*time.Second, "c1 registering web-proxy1 on its node through the catalog", func() bool {
		_, err := cc.Catalog().Register(&api.CatalogRegistration{Node: "c1", SkipNodeUpdate: true, Service: proxy}, nil)
		return err == nil
	})
	redis := &api.CatalogRegistration{Node: "c1", SkipNodeUpdate: true,
		Service: &api.AgentService{ID: "redisV2", Service: "redis", Port: 1235, Address: "198.18.1.2"},
		Checks:  api.HealthChecks{{CheckID: "redis:alive", Status: api.HealthPassing, ServiceID: "redisV2"}}}
	if _, err := cc.Catalog().Register(redis, nil); err != nil {
		t.Fatalf("c1 registering redisV2 through the catalog: %v", err)
	}
	testkit.WaitFor(t, 10*time.Second, "n1's catalog holding c1's web-proxy1", func() bool {
		n, _, err := cs.Catalog().Node("c1", nil)
		return err == nil && n != nil && n.Services["web-proxy1"] != nil && reflect.DeepEqual(n.Services["web-proxy1"].Proxy, proxy.Proxy)
	})
	svcs, err := cc.Agent().Services()
	if err != nil || svcs["web-proxy1"] == nil || svcs["redisV2"] == nil {
		t.Fatalf("c1's agent services = %v, %v", svcs, err)
	}

	// Another agent's node, through c1: refused.
	if _, err := cc.Catalog().Register(&api.CatalogRegistration{Node: "n1", SkipNodeUpdate: true, Service: proxy}, nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("c1 registering on n1's node: %v, want a 403", err)
	}
	if _, err := cc.Catalog().Deregister(&api.CatalogDeregistration{Node: "n1", ServiceID: "consul"}, nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("c1 deregistering n1's consul service: %v, want a 403", err)
	}

	// c1 restarts: its registrations and the check's status stay.
	cl.p.stop(syscall.SIGTERM)
	cl.start()
	testkit.WaitFor(t, 20*time.Second, "c1 back with a leader", func() bool { return cl.leader() != "" })
	checkStatus := func(c *api.Client) string {
		checks, _, err := c.Health().Node("c1", nil)
		if err != nil {
			return ""
		}
		for _, chk := range checks {
			if chk.CheckID == "redis:alive" {
				return chk.Status
			}
		}
		return "missing"
	}
	// The liveness check turns c1 passing again; redis:alive never moves.
	testkit.WaitFor(t, 20*time.Second, "c1 healthy again", func() bool {
		checks, _, err := cs.Health().Node("c1", nil)
		return err == nil && checks.AggregatedStatus() == api.HealthPassing
	})
	if st := checkStatus(cs); st != api.HealthPassing {
		t.Errorf("redis:alive after c1's restart = %q, want passing", st)
	}
	if svcs, err := cc.Agent().Services(); err != nil || svcs["redisV2"] == nil {
		t.Errorf("c1's agent services after its restart = %v, %v", svcs, err)
	}

	for _, d := range []api.CatalogDeregistration{{Node: "c1", ServiceID: "web-proxy1"}, {Node: "c1", ServiceID: "redisV2"}} {
		if _, err := cc.Catalog().Deregister(&d, nil); err != nil {
			t.Fatalf("c1 deregistering %s: %v", d.ServiceID, err)
		}
	}
	testkit.WaitFor(t, 10*time.Second, "n1's catalog without c1's services", func() bool {
		n, _, err := cs.Catalog().Node("c1", nil)
		return err == nil && n != nil && len(n.Services) == 0
	})
}
