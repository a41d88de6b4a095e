package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vmesh/vmesh/lab/testkit"
)

// TestClientsWithoutServers: with its only server stopped, a client keeps
// proxying a mesh call it was already making (to a service on another
// client), answers DNS and stale catalog reads from its replica, and when
// the server returns it catches up from where it stopped.
func TestClientsWithoutServers(t *testing.T) {
	skipShort(t)
	t.Parallel()
	srv := newNode(t, "n1", "127.20.0.1").start("-bootstrap")
	testkit.WaitFor(t, 15*time.Second, "n1 leads", func() bool { return srv.leader() != "" })
	var clients []*node
	for i := 1; i <= 2; i++ {
		c := newClientNode(t, fmt.Sprintf("c%d", i), fmt.Sprintf("127.20.0.%d", 10+i), "-proxy").
			start("-join", srv.clusterAddr(), "-token-file", srv.tokenFile("1h"))
		clients = append(clients, c)
		testkit.WaitFor(t, 20*time.Second, c.name+" knows the leader", func() bool { return c.leader() != "" })
	}
	c1, c2 := clients[0], clients[1]

	// web on c2, called by caller on c1 through both clients' proxies.
	web := startHTTPApp(t, c2.ip, "web-1")
	c2.registerJSON(fmt.Sprintf(`{"ID":"web-1","Name":"web","Address":%q,"Port":%d,"Meta":{"protocol":"http"}}`, c2.ip, web.port()))
	c1.registerJSON(`{"ID":"caller-1","Name":"caller","Port":1,"Connect":{"SidecarService":{"Proxy":{"Upstreams":[{"DestinationName":"web","LocalBindPort":21001}]}}}}`)
	c1.intention("caller", "web", "allow")
	call := func() bool {
		code, app, _, err := httpCall(&http.Client{Timeout: 3 * time.Second}, http.MethodGet, "http://"+hostPort(c1.ip, 21001)+"/hello", "")
		return err == nil && code == 200 && app == "web-1"
	}
	testkit.WaitFor(t, 30*time.Second, "c1's proxy reaching web on c2", call)
	webA := func(c *node) bool {
		m := new(dns.Msg)
		m.SetQuestion("web.service.consul.", dns.TypeA)
		r, err := dns.Exchange(m, c.ip+":8600")
		return err == nil && len(r.Answer) == 1
	}
	testkit.WaitFor(t, 10*time.Second, "c1 answering web.service.consul", func() bool { return webA(c1) })

	// The server goes away: the clients keep serving what they hold.
	srv.kill()
	for i := range 10 {
		if !call() {
			t.Fatalf("mesh call %d from c1 to web on c2 failed with the server down", i)
		}
	}
	if !webA(c1) {
		t.Error("c1 stopped answering web.service.consul with the server down")
	}
	if !c1.instances("web")["web-1"] {
		t.Error("c1's ?stale catalog read lost web-1 with the server down")
	}

	// It returns: a registration made after reaches both clients.
	srv.start()
	testkit.WaitFor(t, 30*time.Second, "a leader again", func() bool { return srv.leader() != "" })
	testkit.WaitFor(t, 30*time.Second, "registering web-2 on c2 once the server is back", func() bool {
		return c2.register("web-2", "web") == nil
	})
	testkit.WaitFor(t, 20*time.Second, "c1 catching up with web-2", func() bool { return c1.instances("web")["web-2"] })
}
