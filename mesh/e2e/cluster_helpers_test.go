package e2e

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
)

// member is a node as /v1/vmesh/members shows it (the fields the tests
// read).
type member struct {
	Name   string
	ID     string
	Addr   string
	Role   string
	Status string
}

// node is one agent process of a test cluster, alone on its loopback IP
// with the default ports, as on a real VM.
type node struct {
	t       *testing.T
	name    string
	ip      string
	dataDir string
	args    []string
	env     []string // added to the agent's environment
	p       *proc
}

func (n *node) httpAddr() string    { return n.ip + ":8500" }
func (n *node) clusterAddr() string { return n.ip + ":7400" }

// newNode prepares a server agent (-server: a joiner becomes a raft
// member) on ip; start runs it.
func newNode(t *testing.T, name, ip string, extra ...string) *node {
	return &node{t: t, name: name, ip: ip, dataDir: t.TempDir(), args: append([]string{"-server"}, extra...)}
}

// newClientNode prepares a client agent (no -server: a joiner keeps a
// replica of the catalog and writes through the leader).
func newClientNode(t *testing.T, name, ip string, extra ...string) *node {
	return &node{t: t, name: name, ip: ip, dataDir: t.TempDir(), args: extra}
}

func (n *node) start(extra ...string) *node {
	n.t.Helper()
	n.launch(extra...)
	n.p.waitHTTP(30 * time.Second)
	return n
}

// launch runs the agent without waiting for it to listen.
func (n *node) launch(extra ...string) *node {
	n.t.Helper()
	args := append([]string{"agent", "-node", n.name, "-bind", n.ip, "-client", n.ip, "-data-dir", n.dataDir,
		"-services-dir", "", "-log-level", "debug"}, n.args...)
	cmd := exec.Command(vmeshBin(n.t), append(args, extra...)...)
	if n.env != nil {
		cmd.Env = append(os.Environ(), n.env...)
	}
	n.p = runProc(n.t, cmd)
	return n
}

func (n *node) kill() { n.p.stop(syscall.SIGKILL) }

// cli runs a vmesh command against this node's agent.
func (n *node) cli(args ...string) (int, string, string) {
	n.t.Helper()
	p := startProc(n.t, append(args, "-http-addr", n.httpAddr())...)
	code := p.wait(2 * time.Minute)
	return code, p.stdout.String(), p.stderr.String()
}

func (n *node) token(ttl string) string {
	n.t.Helper()
	tok, _ := n.tokenExpiring(ttl)
	return tok
}

// tokenFile makes a join token valid for ttl and returns the path of a
// 0600 file holding it, for -token-file: a token never goes on a command
// line.
func (n *node) tokenFile(ttl string) string {
	n.t.Helper()
	return writeToken(n.t, n.token(ttl))
}

// writeToken writes token to a 0600 file in the test's temp dir and
// returns its path.
func writeToken(t *testing.T, token string) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "join-token-")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(token + "\n"); err != nil {
		t.Fatal(err)
	}
	return f.Name() // CreateTemp makes it 0600
}

// tokenExpiring is a join token and the expiry `vmesh token create`
// prints for it.
//
// A new leader stores the CA in raft just after it is known as leader;
// until then the agent answers that the CA is not in the catalog yet, and
// this waits for it.
func (n *node) tokenExpiring(ttl string) (string, time.Time) {
	n.t.Helper()
	var code int
	var out, errs string
	testkit.WaitFor(n.t, 15*time.Second, "token create on "+n.name+" (the CA in its catalog)", func() bool {
		code, out, errs = n.cli("token", "create", "-ttl", ttl)
		return code == 0 || !strings.Contains(errs, "the cluster CA is not in the catalog yet")
	})
	if code != 0 {
		n.t.Fatalf("token create on %s: %d %s", n.name, code, errs)
	}
	var exp time.Time
	if _, at, ok := strings.Cut(errs, "expires at "); ok {
		exp, _ = time.Parse(time.RFC3339, strings.TrimSpace(at))
	}
	return strings.TrimSpace(out), exp
}

func (n *node) nodeID() string {
	b, err := os.ReadFile(filepath.Join(n.dataDir, "node-id"))
	if err != nil {
		n.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// nodeCert is the node certificate in this node's data dir.
func (n *node) nodeCert() *x509.Certificate {
	n.t.Helper()
	b, err := os.ReadFile(filepath.Join(n.dataDir, "tls", "node.pem"))
	if err != nil {
		n.t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		n.t.Fatalf("%s's node.pem holds no PEM block", n.name)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		n.t.Fatalf("%s's node.pem: %v", n.name, err)
	}
	return cert
}

// members is /v1/vmesh/members on this node; nil when it does not answer.
func (n *node) members() []member {
	resp, err := http.Get("http://" + n.httpAddr() + "/v1/vmesh/members")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var ms []member
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&ms) != nil {
		return nil
	}
	return ms
}

// leader is the leader's cluster address as this node sees it.
func (n *node) leader() string {
	resp, err := http.Get("http://" + n.httpAddr() + "/v1/status/leader")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var l string
	json.NewDecoder(resp.Body).Decode(&l)
	return l
}

func (n *node) register(id, name string) error {
	req, _ := http.NewRequest(http.MethodPut, "http://"+n.httpAddr()+"/v1/agent/service/register",
		strings.NewReader(fmt.Sprintf(`{"ID":%q,"Name":%q,"Port":80}`, id, name)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s: %s", resp.Status, b)
	}
	return nil
}

// instances lists the service IDs of name that this node's catalog holds.
func (n *node) instances(name string) map[string]bool {
	resp, err := http.Get("http://" + n.httpAddr() + "/v1/catalog/service/" + name + "?stale")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var list []struct{ ServiceID string }
	if json.NewDecoder(resp.Body).Decode(&list) != nil {
		return nil
	}
	out := map[string]bool{}
	for _, s := range list {
		out[s.ServiceID] = true
	}
	return out
}

// roles counts the members by role.
func roles(ms []member) map[string]int {
	out := map[string]int{}
	for _, m := range ms {
		out[m.Role]++
	}
	return out
}

// bootCluster starts n1 with -bootstrap and joins the others, returning
// all of them once every node knows the leader.
func bootCluster(t *testing.T, prefix string, count int, extra ...string) []*node {
	t.Helper()
	nodes := make([]*node, count)
	nodes[0] = newNode(t, "n1", prefix+"1", extra...).start("-bootstrap")
	testkit.WaitFor(t, 15*time.Second, "n1 leads", func() bool { return nodes[0].leader() != "" })
	for i := 1; i < count; i++ {
		tok := nodes[0].tokenFile("1h")
		nodes[i] = newNode(t, fmt.Sprintf("n%d", i+1), fmt.Sprintf("%s%d", prefix, i+1), extra...).
			start("-join", nodes[0].clusterAddr(), "-token-file", tok)
	}
	for _, n := range nodes {
		testkit.WaitFor(t, 20*time.Second, n.name+" knows the leader", func() bool { return n.leader() != "" })
	}
	return nodes
}
