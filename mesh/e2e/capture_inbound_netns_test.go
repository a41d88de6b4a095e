//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
)

// TestInboundCaptureAndHostIdentityNetns: two "VMs" on a bridge. n1 runs
// two services, monolith and admin, and names monolith its default
// service; n2 runs orders (HTTP, port 8080) with capture {
// inbound_ports = [8080] }. Intentions default to deny. It checks:
//
//   - an unmodified curl on n1 (root, no service user) to orders.mesh is
//     refused without an intention, and reaches orders once monolith ->
//     orders is allowed: n1's captured traffic speaks for monolith (the
//     app's x-forwarded-client-cert names svc/monolith), not for the
//     host;
//   - strict (the default): a plaintext call from n1 straight to
//     n2:8080 is captured by n2, reset and counted, while the mesh call
//     to orders keeps working;
//   - permissive: after a restart of n2 with inbound_mode = "permissive",
//     the same plaintext call reaches the app through n2's proxy (on
//     loopback) and is counted.
func TestInboundCaptureAndHostIdentityNetns(t *testing.T) {
	skipShort(t)
	t.Parallel()
	l := newLab(t, "vmt-cap2-in", 2)
	n1, n2 := l.nodes[0], l.nodes[1]
	const ordersPort = 8080

	testkit.WriteFile(t, filepath.Join(n1.dir, "services.d"), "apps.hcl", `services = [
  { name = "monolith", port = 7000 },
  { name = "admin",    port = 7001 },
]
`)
	testkit.WriteFile(t, n1.dir, "vmesh.hcl", `capture {
  enabled = true
  capture_dns = true
  default_service = "monolith"
}
dns { recursors = ["192.0.2.53"] }
cluster { voters = 1 }
`)
	n2cfg := func(mode string) {
		testkit.WriteFile(t, n2.dir, "vmesh.hcl", fmt.Sprintf(`capture {
  enabled = true
  reconcile_interval = "2s"
  inbound_ports = [%d]
  inbound_mode = %q
}
cluster { voters = 1 }
`, ordersPort, mode))
	}
	n2cfg("strict")
	for _, n := range l.nodes {
		n.args = []string{"-node", fmt.Sprintf("n%d", n.idx), "-bind", n.ip, "-client", "127.0.0.1",
			"-data-dir", filepath.Join(n.dir, "data"), "-services-dir", filepath.Join(n.dir, "services.d"),
			"-config", filepath.Join(n.dir, "vmesh.hcl")}
	}
	n1.resolvConf("nameserver 127.0.0.1\n") // port 53 -> the agent's DNS, by capture_dns
	n1.args = append(n1.args, "-bootstrap")
	n1.start()
	testkit.WaitFor(t, 20*time.Second, "n1 leads", func() bool {
		code, out := n1.api(http.MethodGet, "/v1/status/leader", "")
		return code == http.StatusOK && strings.Contains(out, n1.ip)
	})
	var tok struct{ Token string }
	testkit.WaitFor(t, 20*time.Second, "a join token from n1", func() bool {
		code, out := n1.api(http.MethodPut, "/v1/vmesh/token?ttl=1h&uses=1", "")
		return code == http.StatusOK && json.Unmarshal([]byte(out), &tok) == nil && tok.Token != ""
	})
	// A server (a nonvoter: voters = 1, so its restart keeps n1's
	// quorum): the mesh needs its leaf certificates, which a server
	// signs with its sealed copy of the CA key.
	n2.args = append(n2.args, "-server", "-join", n1.ip+":7400", "-token-file", writeToken(t, tok.Token))
	n2.start()

	app := serveLabApp(n2, "orders", ordersPort)
	testkit.WaitFor(t, 30*time.Second, "orders registered on n2", func() bool {
		code, _ := n2.api(http.MethodPut, "/v1/agent/service/register", fmt.Sprintf(`{"Name":"orders","Port":%d,"Meta":{"protocol":"http"}}`, ordersPort))
		return code == http.StatusOK
	})
	redirected := func() bool { return strings.Contains(n2.saves(), fmt.Sprintf("--dport %d", ordersPort)) }
	testkit.WaitFor(t, 30*time.Second, "n2 redirects 8080 (its proxy serves the inbound listener)", redirected)

	// Host identity: default deny, no intention yet.
	const meshURL = "http://orders.mesh/who"
	testkit.WaitFor(t, 30*time.Second, "orders.mesh answers on n1 (refused by the intentions' default)", func() bool {
		out, err := n1.curl(-1, meshURL)
		return err != nil && strings.Contains(out, "403")
	})
	n1.mustAPI(http.MethodPut, "/v1/connect/intentions/exact?source=monolith&destination=orders", `{"Action":"allow"}`)
	var out string
	testkit.WaitFor(t, 30*time.Second, "n1's curl of orders.mesh once monolith -> orders is allowed", func() bool {
		var err error
		out, err = n1.curl(-1, meshURL)
		return err == nil && strings.HasPrefix(out, "orders saw ")
	})
	if !strings.Contains(out, "URI=spiffe://") || !strings.Contains(out, "/svc/monolith") {
		t.Errorf("orders' answer %q: want an x-forwarded-client-cert naming svc/monolith, n1's default service", out)
	}
	t.Logf("n1 (root, no service user) -> orders.mesh as monolith: %s", strings.TrimSpace(out))

	// Strict: plaintext straight to n2:8080 is captured, reset, counted.
	plainURL := fmt.Sprintf("http://%s:%d/plain", n2.ip, ordersPort)
	refusedLabels := `action="refused",listener="vmesh/inbound/capture"`
	passedLabels := `action="passed",listener="vmesh/inbound/capture"`
	refused0, _ := n2.metric("vmesh_inbound_plaintext_connections_total", refusedLabels)
	captured0 := n2.natPackets("VMESH_PREROUTING", fmt.Sprintf("dpt:%d", ordersPort), "vmesh: inbound_ports")
	for range 2 {
		// A TCP reset (curl: "Connection reset by peer"), not a clean close.
		if out, err := n1.curl(-1, plainURL); err == nil || strings.Contains(out, "orders saw") || !strings.Contains(out, "reset") {
			t.Fatalf("strict: plaintext to n2:%d: %q, %v; want a reset", ordersPort, out, err)
		}
	}
	testkit.WaitFor(t, 10*time.Second, "n2 counts the refused plaintext", func() bool {
		v, _ := n2.metric("vmesh_inbound_plaintext_connections_total", refusedLabels)
		return v >= refused0+2
	})
	// The count on vmesh/inbound/capture already proves the redirect (the
	// connections went to :8080, and only the rule sends them to 15006);
	// the rule's own packet count is only logged: a reconcile that
	// re-creates the chain resets it.
	t.Logf("n2's inbound_ports rule: %d packets (%d before)",
		n2.natPackets("VMESH_PREROUTING", fmt.Sprintf("dpt:%d", ordersPort), "vmesh: inbound_ports"), captured0)
	if !strings.Contains(n2.p.stderr.String()+n2.p.stdout.String(), "refused an inbound connection that is not mesh mTLS") {
		t.Error("n2 did not log the refused plaintext")
	}
	if out, err := n1.curl(-1, meshURL); err != nil || !strings.HasPrefix(out, "orders saw ") {
		t.Errorf("strict: the mesh call to orders failed: %q %v", out, err)
	}
	if v, _ := n2.metric("vmesh_inbound_plaintext_connections_total", passedLabels); v != 0 {
		t.Errorf("strict: %v plaintext connections passed", v)
	}
	t.Log("strict: plaintext to n2:8080 reset and counted; orders.mesh from n1 works")

	// Permissive, after a restart of n2.
	if code := n2.p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("n2: SIGTERM: exit %d\n%s", code, n2.p.stderr)
	}
	if strings.Contains(n2.saves(), "VMESH") {
		t.Fatalf("n2: rules left after a clean stop:\n%s", n2.saves())
	}
	n2cfg("permissive")
	n2.start()
	testkit.WaitFor(t, 30*time.Second, "n2 redirects 8080 again", redirected)
	testkit.WaitFor(t, 30*time.Second, "permissive: plaintext to n2:8080 reaches the app", func() bool {
		var err error
		out, err = n1.curl(-1, plainURL)
		return err == nil && strings.HasPrefix(out, "orders saw ")
	})
	// n2's proxy passed it on over loopback: the app sees the proxy.
	if !strings.HasPrefix(out, "orders saw 127.0.0.1:") {
		t.Errorf("permissive: the app saw %q; want n2's proxy on 127.0.0.1", out)
	}
	if v, _ := n2.metric("vmesh_inbound_plaintext_connections_total", passedLabels); v < 1 {
		t.Errorf("permissive: %v passed plaintext connections counted, want at least 1", v)
	}
	testkit.WaitFor(t, 30*time.Second, "the mesh call in permissive mode", func() bool {
		out, err := n1.curl(-1, meshURL)
		return err == nil && strings.HasPrefix(out, "orders saw ")
	})
	app.mu.Lock()
	t.Logf("permissive: plaintext passed and counted; the orders app saw %v", app.remotes)
	app.mu.Unlock()
}
