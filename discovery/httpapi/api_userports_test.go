package httpapi

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmesh/vmesh/discovery"
)

// userPortsAPI is an agent API for node n1 over a store that registrations
// are applied to directly, with the given per-user port policy.
func userPortsAPI(t *testing.T, p discovery.UserPortPolicy) (*discovery.Store, func(method, path, body string) (int, string)) {
	t.Helper()
	s := discovery.NewStore()
	if err := s.EnsureNode(1, &discovery.Node{Name: "n1", Address: "10.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	// A millisecond per write, as raft takes: time enough for a second
	// registration to read the catalog before the first one lands.
	a := &API{Store: s, Writer: &storeWriter{s: s, idx: 1, latency: time.Millisecond}, Cluster: fakeCluster{}, NodeName: "n1", Datacenter: "dc1",
		UserPorts: &discovery.UserPortAllocator{Policy: p}}
	mux := http.NewServeMux()
	a.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	do := func(method, path, body string) (int, string) {
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Error(err)
			return 0, ""
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err) // also from the race test's goroutines
			return 0, ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	return s, do
}

// userReg registers id of service svc run by user u (a UID, which needs no
// account on this host), with upstreams on the given ports.
func userReg(id, svc, u string, upstreams ...int) string {
	meta := ""
	if u != "" {
		meta = fmt.Sprintf(`,"Meta":{"vmesh-user":%q}`, u)
	}
	conn := ""
	if len(upstreams) > 0 {
		var ups []string
		for _, p := range upstreams {
			ups = append(ups, fmt.Sprintf(`{"DestinationName":"db","LocalBindPort":%d}`, p))
		}
		conn = `,"Connect":{"SidecarService":{"Proxy":{"Upstreams":[` + strings.Join(ups, ",") + `]}}}`
	}
	return fmt.Sprintf(`{"ID":%q,"Name":%q,"Port":80%s%s}`, id, svc, meta, conn)
}

func storedPorts(t *testing.T, s *discovery.Store) map[string]int {
	t.Helper()
	_, insts, err := s.NodeInstances(nil, "n1")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, in := range insts {
		out[in.ID] = in.UserPort
	}
	return out
}

// TestUserPortRegistrationRace: registrations that arrive together each
// get a port of their own (the agent's registration lock), and
// re-registering them all at once moves none.
func TestUserPortRegistrationRace(t *testing.T) {
	p := discovery.UserPortPolicy{Base: 15100, Reserved: []int{15103}}
	s, do := userPortsAPI(t, p)
	const n = 40
	register := func() {
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				body := userReg(fmt.Sprintf("svc%d-1", i), fmt.Sprintf("svc%d", i), fmt.Sprint(30000+i))
				if code, msg := do(http.MethodPut, "/v1/agent/service/register", body); code != http.StatusOK {
					t.Errorf("registering svc%d: %d %s", i, code, msg)
				}
			})
		}
		wg.Wait()
	}
	register()
	first := storedPorts(t, s)
	byPort := map[int]string{}
	for id, port := range first {
		if port < 15100 || port > 15100+n || port == 15103 {
			t.Errorf("%s: port %d, want one in 15100..%d but 15103", id, port, 15100+n)
		}
		if prev, dup := byPort[port]; dup {
			t.Errorf("%s and %s both hold port %d", prev, id, port)
		}
		byPort[port] = id
	}
	if len(first) != n {
		t.Fatalf("%d instances stored, want %d", len(first), n)
	}
	_, insts, _ := s.NodeInstances(nil, "n1")
	for _, u := range p.Ports("n1", insts) {
		var i int
		fmt.Sscan(u.User, &i)
		if id := fmt.Sprintf("svc%d-1", i-30000); first[id] != u.Port {
			t.Errorf("Ports gives user %s port %d; its instance stored %d", u.User, u.Port, first[id])
		}
	}
	register()
	if again := storedPorts(t, s); fmt.Sprint(again) != fmt.Sprint(first) {
		t.Errorf("re-registering moved ports:\n%v\nwas\n%v", again, first)
	}
}

// TestUserPortRegistration: through the agent API, a user's port stays
// with it (re-registration, a second instance, another user leaving), an
// upstream may not take it, and an instance stored before ports were kept
// gets its current port stored on its next registration.
func TestUserPortRegistration(t *testing.T) {
	s, do := userPortsAPI(t, discovery.UserPortPolicy{Base: 15100})
	put := func(body string) (int, string) { return do(http.MethodPut, "/v1/agent/service/register", body) }
	mustPut := func(body string) {
		t.Helper()
		if code, msg := put(body); code != http.StatusOK {
			t.Fatalf("%s: %d %s", body, code, msg)
		}
	}
	want := func(what string, ports map[string]int) {
		t.Helper()
		if got := storedPorts(t, s); fmt.Sprint(got) != fmt.Sprint(ports) {
			t.Errorf("%s: stored ports %v, want %v", what, got, ports)
		}
	}
	// An instance stored before ports were (as raft replays an old
	// entry): it has 15100 now, computed.
	if err := s.EnsureService(2, &discovery.Instance{Node: "n1", ID: "old-1", Service: "old", Port: 80, User: "30009"}, nil); err != nil {
		t.Fatal(err)
	}
	mustPut(userReg("a-1", "a", "30001"))
	mustPut(userReg("b-1", "b", "30002"))
	mustPut(userReg("c-1", "c", "30003"))
	mustPut(userReg("a-2", "a", "30001")) // a second instance shares its user's port
	want("three users", map[string]int{"old-1": 0, "a-1": 15101, "a-2": 15101, "b-1": 15102, "c-1": 15103})

	// An upstream on a user's port is refused, naming the field; the user
	// does not move.
	code, msg := put(userReg("web-1", "web", "", 15200, 15102))
	if code != http.StatusBadRequest || !strings.Contains(msg, `Connect.SidecarService.Proxy.Upstreams[1].LocalBindPort: port 15102 is the per-user outbound port of user "30002" (service "b")`) {
		t.Errorf("upstream on bob's port: %d %s", code, msg)
	}
	if code, msg := put(userReg("web-1", "web", "", 15100)); code != http.StatusBadRequest || !strings.Contains(msg, `port 15100 is the per-user outbound port of user "30009" (service "old")`) {
		t.Errorf("upstream on the old instance's computed port: %d %s", code, msg)
	}
	// Nor may a user's own registration bind its port.
	if code, msg := put(userReg("c-1", "c", "30003", 15103)); code != http.StatusBadRequest || !strings.Contains(msg, "Upstreams[0].LocalBindPort: port 15103") {
		t.Errorf("upstream on the instance's own port: %d %s", code, msg)
	}
	mustPut(userReg("web-1", "web", "", 15104))

	// The first users go: the others stay where they are, and a new user
	// takes the lowest free port that no upstream binds.
	for _, id := range []string{"a-1", "a-2"} {
		if code, msg := do(http.MethodPut, "/v1/agent/service/deregister/"+id, ""); code != http.StatusOK {
			t.Fatalf("deregistering %s: %d %s", id, code, msg)
		}
	}
	mustPut(userReg("c-1", "c", "30003"))
	want("a gone, c re-registered", map[string]int{"old-1": 0, "b-1": 15102, "c-1": 15103, "web-1": 0})
	mustPut(userReg("d-1", "d", "30004"))
	mustPut(userReg("e-1", "e", "30005"))
	want("d and e added", map[string]int{"old-1": 0, "b-1": 15102, "c-1": 15103, "d-1": 15101, "e-1": 15105, "web-1": 0})

	// The old instance's next registration stores the port it has.
	mustPut(userReg("old-1", "old", "30009"))
	want("old re-registered", map[string]int{"old-1": 15100, "b-1": 15102, "c-1": 15103, "d-1": 15101, "e-1": 15105, "web-1": 0})
	// Changing an instance's user releases the old user's port, which is
	// not handed straight to the new one.
	mustPut(userReg("e-1", "e", "30006"))
	want("e's user changed", map[string]int{"old-1": 15100, "b-1": 15102, "c-1": 15103, "d-1": 15101, "e-1": 15106, "web-1": 0})
}
