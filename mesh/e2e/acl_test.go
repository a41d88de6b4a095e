package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
)

// aclCall sends method path (with body, if any) to n with token and
// returns the status and body.
func aclCall(t *testing.T, n *node, method, path, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+n.httpAddr()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Consul-Token", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestACLsProcesses: agents with no ACL config enforce ACLs, deny by
// default (and say so); a -dev agent stays open. As the unprivileged user
// nobody, with no token, curl can register no service, write no KV and no
// intention, mint no join token and make no agent leave. A token made on
// a server works on a client, and stops there as soon as it is deleted.
func TestACLsProcesses(t *testing.T) {
	skipShort(t)
	t.Parallel()
	const root = "3a7e1c52-5b5f-4a51-9d3e-4b1ad4a0e001"
	cfg := filepath.Join(t.TempDir(), "acl.hcl")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("acl { tokens { initial_management = %q } }\n", root)), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := newNode(t, "s1", "127.26.0.1", "-config", cfg)
	srv.env = []string{keepACLDefaults}
	srv.start("-bootstrap")
	// The banner is printed once the agent listens, a moment after.
	if !testkit.Eventually(10*time.Second, func() bool { return strings.Contains(srv.p.stdout.String(), "ACLs: on, default deny") }) {
		t.Errorf("banner of an agent with no ACL settings:\n%s\nwant ACLs on, default deny", srv.p.stdout)
	}
	testkit.WaitFor(t, 20*time.Second, "s1 leads and has bootstrapped ACLs", func() bool {
		code, _ := aclCall(t, srv, http.MethodGet, "/v1/acl/token/self", root, "")
		return srv.leader() != "" && code == http.StatusOK
	})

	// A client joins with a join token minted with the management token.
	code, body := aclCall(t, srv, http.MethodPut, "/v1/vmesh/token?ttl=1h", root, "")
	if code != http.StatusOK {
		t.Fatalf("join token with the management token: %d %s", code, body)
	}
	var jt struct{ Token string }
	json.Unmarshal([]byte(body), &jt)
	cli := newClientNode(t, "c1", "127.26.0.11")
	cli.env = []string{keepACLDefaults}
	cli.start("-join", srv.clusterAddr(), "-token-file", writeToken(t, jt.Token))
	testkit.WaitFor(t, 20*time.Second, "c1 knows the leader", func() bool { return cli.leader() != "" })

	// As nobody, no token: every write refused.
	for _, n := range []*node{srv, cli} {
		for _, c := range []struct{ method, path, body string }{
			{"PUT", "/v1/agent/service/register", `{"Name":"impostor","Port":80}`},
			{"PUT", "/v1/kv/secret/db-password", "hunter2"},
			{"PUT", "/v1/connect/intentions/exact?source=*&destination=*", `{"Action":"allow"}`},
			{"PUT", "/v1/vmesh/token", ""},
			{"PUT", "/v1/vmesh/leave", ""},
			{"GET", "/v1/kv/secret/db-password", ""},
		} {
			args := []string{"-u", "nobody", "--", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", c.method}
			if c.body != "" {
				args = append(args, "--data", c.body)
			}
			out, err := exec.Command("runuser", append(args, "http://"+n.httpAddr()+c.path)...).Output()
			if err != nil && len(out) == 0 {
				t.Skipf("cannot run curl as nobody (runuser needs root): %v", err)
			}
			if string(out) != "403" {
				t.Errorf("as nobody on %s, %s %s without a token: %s; want 403", n.name, c.method, c.path, out)
			}
		}
	}

	// A web-only token made on the server works on the client.
	code, body = aclCall(t, srv, http.MethodPut, "/v1/acl/policy", root, `{"Name":"web-write","Rules":"service \"web\" { policy = \"write\" }"}`)
	if code != http.StatusOK {
		t.Fatalf("policy create: %d %s", code, body)
	}
	code, body = aclCall(t, srv, http.MethodPut, "/v1/acl/token", root, `{"Policies":[{"Name":"web-write"}]}`)
	if code != http.StatusOK {
		t.Fatalf("token create: %d %s", code, body)
	}
	var tok struct{ AccessorID, SecretID string }
	json.Unmarshal([]byte(body), &tok)
	if code, body := aclCall(t, cli, http.MethodPut, "/v1/agent/service/register", tok.SecretID, `{"ID":"web-c1","Name":"web","Port":80}`); code != http.StatusOK {
		t.Errorf("web token registering web on c1: %d %s", code, body)
	}
	if code, body := aclCall(t, cli, http.MethodPut, "/v1/agent/service/register", tok.SecretID, `{"ID":"api-c1","Name":"api","Port":81}`); code != http.StatusForbidden || !strings.Contains(body, "Permission denied") {
		t.Errorf("web token registering api on c1: %d %s; want 403 Permission denied", code, body)
	}
	if code, _ := aclCall(t, cli, http.MethodPut, "/v1/kv/app/x", tok.SecretID, "1"); code != http.StatusForbidden {
		t.Errorf("web token writing KV on c1: %d; want 403", code)
	}

	// Deleted on the server: refused on the client at once.
	if code, body := aclCall(t, srv, http.MethodDelete, "/v1/acl/token/"+tok.AccessorID, root, ""); code != http.StatusOK {
		t.Fatalf("token delete: %d %s", code, body)
	}
	deleted := time.Now()
	testkit.WaitFor(t, 2*time.Second, "c1 refusing the deleted token", func() bool {
		code, body := aclCall(t, cli, http.MethodPut, "/v1/agent/service/register", tok.SecretID, `{"ID":"web-c1b","Name":"web","Port":80}`)
		return code == http.StatusForbidden && strings.Contains(body, "ACL not found")
	})
	t.Logf("c1 refused the deleted token %s after the delete", time.Since(deleted).Round(time.Millisecond))

	// -dev stays open, and says so.
	dev := runProc(t, exec.Command(vmeshBin(t), "agent", "-dev", "-client", "127.26.0.21"))
	dev.waitHTTP(15 * time.Second)
	if !testkit.Eventually(10*time.Second, func() bool { return strings.Contains(dev.stdout.String(), "ACLs: off") }) {
		t.Errorf("-dev banner:\n%s\nwant ACLs: off", dev.stdout)
	}
	req, _ := http.NewRequest(http.MethodPut, "http://127.26.0.21:8500/v1/agent/service/register", bytes.NewReader([]byte(`{"Name":"web","Port":80}`)))
	testkit.WaitFor(t, 10*time.Second, "-dev registering without a token", func() bool {
		resp, err := http.DefaultClient.Do(req.Clone(req.Context()))
		if err != nil {
			return false
		}
		resp.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader([]byte(`{"Name":"web","Port":80}`)))
		return resp.StatusCode == http.StatusOK
	})
}
