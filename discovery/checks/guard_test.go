package checks

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/discovery"
)

func testGuard() *Guard {
	ls := []Listener{
		{Addr: netip.MustParseAddrPort("127.0.0.1:8500"), Name: "HTTP API"},
		{Addr: netip.MustParseAddrPort("0.0.0.0:7400"), Name: "cluster port"},
		{Addr: netip.MustParseAddrPort("0.0.0.0:15006"), Name: "proxy listener vmesh/inbound/capture"},
		{Addr: netip.MustParseAddrPort("10.0.0.5:15443"), Name: "proxy listener vmesh/inbound"},
		{Addr: netip.MustParseAddrPort("[::1]:80"), Name: "admin listener"},
	}
	return &Guard{
		Listeners:  func() []Listener { return ls },
		LocalAddrs: func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("10.0.0.5")}, nil },
		Resolve: func(_ context.Context, host string) ([]netip.Addr, error) {
			switch host {
			case "localhost":
				return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}, nil
			case "app.internal":
				return []netip.Addr{netip.MustParseAddr("10.0.0.9")}, nil
			}
			return nil, errors.New("no such host")
		},
	}
}

// A check may not target the agent's listeners: by address, by a name
// that resolves to one, through an address of the host that a listener
// on every address answers, or through 0.0.0.0. Other targets pass.
func TestGuardCheckTarget(t *testing.T) {
	g := testGuard()
	cases := []struct {
		name string
		def  discovery.CheckDefinition
		want string // "" allowed, else the listener named
	}{
		{"api", discovery.CheckDefinition{HTTP: "http://127.0.0.1:8500/v1/agent/self"}, "HTTP API (127.0.0.1:8500)"},
		{"api by name", discovery.CheckDefinition{HTTP: "http://localhost:8500/v1/kv/secret"}, "HTTP API"},
		{"api via 0.0.0.0", discovery.CheckDefinition{TCP: "0.0.0.0:8500"}, "HTTP API"},
		{"api on another loopback address", discovery.CheckDefinition{TCP: "127.0.0.2:8500"}, ""},
		{"cluster on loopback", discovery.CheckDefinition{GRPC: "127.0.0.1:7400/raft"}, "cluster port"},
		{"cluster on the host address", discovery.CheckDefinition{TCP: "10.0.0.5:7400"}, "cluster port"},
		{"cluster on another host", discovery.CheckDefinition{TCP: "10.0.0.6:7400"}, ""},
		{"capture listener", discovery.CheckDefinition{HTTP: "https://10.0.0.5:15006/"}, "vmesh/inbound/capture"},
		{"mesh port", discovery.CheckDefinition{TCP: "10.0.0.5:15443"}, "vmesh/inbound"},
		{"default port 80", discovery.CheckDefinition{HTTP: "http://localhost/"}, "admin listener"},
		{"an app", discovery.CheckDefinition{HTTP: "http://127.0.0.1:8080/health"}, ""},
		{"an app by name", discovery.CheckDefinition{HTTP: "http://app.internal:8500/"}, ""},
		{"unresolvable", discovery.CheckDefinition{TCP: "nowhere.invalid:8500"}, ""},
		{"ttl", discovery.CheckDefinition{TTL: time.Minute}, ""},
	}
	for _, c := range cases {
		err := g.CheckTarget(c.name, c.def)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v; want allowed", c.name, err)
		case c.want != "" && err == nil:
			t.Errorf("%s: allowed; want refused as %s", c.name, c.want)
		case c.want != "":
			msg := err.Error()
			if !strings.Contains(msg, `check "`+c.name+`"`) || !strings.Contains(msg, c.want) || !strings.Contains(msg, "allow_agent_targets") ||
				!errors.Is(err, ErrAgentTarget) || !errors.Is(err, discovery.ErrInvalid) {
				t.Errorf("%s: %q; want it to name the check, %s and the setting, and be ErrAgentTarget and ErrInvalid", c.name, msg, c.want)
			}
		}
	}
	if err := (*Guard)(nil).CheckTarget("x", discovery.CheckDefinition{TCP: "127.0.0.1:8500"}); err != nil {
		t.Errorf("a nil guard refused: %v", err)
	}
}

// The probe's dial is guarded too: a target that registration let
// through (here, a name that did not resolve then) is refused when it
// connects to the agent's listener, and the check goes critical saying
// why, without a request reaching the listener.
func TestGuardRefusesAtDial(t *testing.T) {
	srv := newCountingServer(t, 200)
	ap := netip.MustParseAddrPort(strings.TrimPrefix(srv.URL, "http://"))
	g := &Guard{Listeners: func() []Listener { return []Listener{{Addr: ap, Name: "HTTP API"}} }}
	sink := newFakeCheckSink()
	r := newTestCheckRunner(t, sink)
	r.Guard = g
	r.Sync([]*discovery.Check{
		httpCheck("api", srv.URL+"/v1/agent/self", time.Hour, ""),
		{CheckID: "tcp", Name: "tcp", ServiceID: "svc-tcp", Definition: discovery.CheckDefinition{TCP: ap.String(), Interval: time.Hour}},
	})
	for _, id := range []string{"api", "tcp"} {
		out := sink.waitStatus(t, id, discovery.HealthCritical).output
		if !strings.Contains(out, "refused: "+ap.String()+" is this agent's HTTP API") {
			t.Errorf("%s: output %q; want the refusal", id, out)
		}
	}
	if n := srv.hits.Load(); n != 0 {
		t.Errorf("the agent's listener got %d requests", n)
	}
}

// The output limit is configurable and holds for probe and TTL outputs.
func TestOutputMax(t *testing.T) {
	srv := newCountingServer(t, 500)
	sink := newFakeCheckSink()
	r := newTestCheckRunner(t, sink)
	r.OutputMax = 64
	r.Sync([]*discovery.Check{
		httpCheck("http", srv.URL+"/"+strings.Repeat("p", 100), time.Hour, ""),
		{CheckID: "ttl", Name: "ttl", ServiceID: "svc-ttl", Definition: discovery.CheckDefinition{TTL: time.Hour}},
	})
	if out := sink.waitStatus(t, "http", discovery.HealthCritical).output; len(out) > 64 || !strings.HasSuffix(out, "(output cut to 64 bytes)") {
		t.Errorf("probe output %q (%d bytes); want at most 64, cut", out, len(out))
	}
	if err := r.UpdateTTL(context.Background(), "ttl", discovery.HealthWarning, strings.Repeat("w", 1000)); err != nil {
		t.Fatal(err)
	}
	if out := sink.waitStatus(t, "ttl", discovery.HealthWarning).output; len(out) > 64 || !strings.HasPrefix(out, "www") {
		t.Errorf("TTL output %d bytes; want at most 64", len(out))
	}
}
