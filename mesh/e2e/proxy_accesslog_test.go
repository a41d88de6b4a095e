package e2e

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
)

// accessLine is one JSON access log line (the default format's fields the
// test reads).
type accessLine map[string]any

func (l accessLine) str(k string) string {
	s, _ := l[k].(string)
	return s
}

func (l accessLine) num(k string) float64 {
	n, _ := l[k].(float64)
	return n
}

// readAccessLines parses every line of the access log; a line that is not
// a JSON object fails the test.
func readAccessLines(t *testing.T, path string) []accessLine {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []accessLine
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l accessLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("access log line is not JSON: %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

// findLine is the first line for which match holds.
func findLine(lines []accessLine, match func(accessLine) bool) accessLine {
	for _, l := range lines {
		if match(l) {
			return l
		}
	}
	return nil
}

// TestProxyAccessLogs: with access logs off, a request refused by an
// intention (403 on B's mesh port) and one with no upstream (503 on A)
// each leave a warn line in their agent's log. Then proxy-defaults turns
// on file access logs through the HTTP API, and an allowed request, a
// denied one, a request with no upstream and a TCP connection each leave
// JSON lines with Envoy's fields and flags, on both hops. Before that, a
// Path outside the agents' -access-log-dir is refused by each proxy with a
// warn line, and no file is created there.
func TestProxyAccessLogs(t *testing.T) {
	skipShort(t)
	t.Parallel()
	logRoot := t.TempDir()
	logDir := filepath.Join(logRoot, "vmesh") // created by the agents
	nodes := bootCluster(t, "127.48.0.", 2, "-proxy", "-access-log-dir", logDir)
	a, b := nodes[0], nodes[1]
	web := startHTTPApp(t, b.ip, "web-1")
	echo := startTCPEcho(t, b.ip, "echo-1")
	b.registerJSON(fmt.Sprintf(`{"ID":"web-1","Name":"web","Address":%q,"Port":%d,"Meta":{"protocol":"http"}}`, b.ip, web.port()))
	b.registerJSON(fmt.Sprintf(`{"ID":"echo-1","Name":"echo","Address":%q,"Port":%d}`, b.ip, echo))
	// ghost is an http service without instances: A answers 503 UH.
	a.mustAPI(http.MethodPut, "/v1/config", `{"Kind":"service-defaults","Name":"ghost","Protocol":"http"}`)
	a.registerJSON(`{"ID":"client-1","Name":"client","Port":1,"Connect":{"SidecarService":{"Proxy":{"Upstreams":[
		{"DestinationName":"web","LocalBindPort":21001},{"DestinationName":"echo","LocalBindPort":21005},
		{"DestinationName":"ghost","LocalBindPort":21006}]}}}}`)
	a.intention("client", "*", "allow")
	webURL := "http://" + hostPort(a.ip, 21001)
	ghostURL := "http://" + hostPort(a.ip, 21006)
	echoAddr := hostPort(a.ip, 21005)
	c := &http.Client{Timeout: 5 * time.Second}
	get := func(url, id string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("X-Request-Id", id)
		req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		req.Header.Set("User-Agent", "vmesh-e2e")
		resp, err := c.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(body)
	}
	testkit.WaitFor(t, 30*time.Second, "web through A's upstream", func() bool {
		code, _ := get(webURL+"/ready", "warmup")
		return code == 200
	})

	// Access logs off: refusals still leave a warn line. (They are rate
	// limited per reason: the warm-up may have spent the burst on 403s
	// from before the allow intention arrived, so the request is repeated
	// until a token is back, at most a second.)
	a.intention("client", "web", "deny")
	testkit.WaitFor(t, 10*time.Second, "B's warn line for the denied request", func() bool {
		if code, _ := get(webURL+"/denied", "e2e-denied-0"); code != http.StatusForbidden {
			return false
		}
		l := b.logs()
		return strings.Contains(l, "request refused") && strings.Contains(l, "rbac_access_denied_matched_policy[none]") && strings.Contains(l, "e2e-denied-0")
	})
	a.deleteIntention("client", "web")
	if code, body := get(ghostURL+"/x", "e2e-ghost-0"); code != http.StatusServiceUnavailable || body != "no healthy upstream" {
		t.Fatalf("ghost: %d %q, want 503 no healthy upstream", code, body)
	}
	testkit.WaitFor(t, 10*time.Second, "A's warn line for the request with no upstream", func() bool {
		l := a.logs()
		return strings.Contains(l, "request refused") && strings.Contains(l, "no_healthy_upstream") && strings.Contains(l, "e2e-ghost-0")
	})

	// A path outside the agents' access log directory: the API takes it
	// (it cannot know each host's directory), each proxy refuses it with a
	// warn line naming the path and the directory, and keeps serving.
	escape := filepath.Join(logDir, "..", "escaped.log")
	a.mustAPI(http.MethodPut, "/v1/config", fmt.Sprintf(`{"Kind":"proxy-defaults","Name":"global","AccessLogs":{"Enabled":true,"Type":"file","Path":%q}}`, escape))
	for _, n := range []*node{a, b} {
		testkit.WaitFor(t, 20*time.Second, n.name+"'s warn line for the path outside its access log directory", func() bool {
			l := n.logs()
			return strings.Contains(l, "access log refused") && strings.Contains(l, "path="+escape) && strings.Contains(l, "access_log_dir="+logDir)
		})
	}
	if code, _ := get(webURL+"/still-serving", "e2e-escape"); code != 200 {
		t.Errorf("with the refused access log: %d, want 200", code)
	}
	if _, err := os.Lstat(filepath.Join(logRoot, "escaped.log")); err == nil {
		t.Errorf("an access log was written outside the access log directory")
	}

	// Access logs on, through the HTTP API. Both agents share the path
	// (proxy-defaults is mesh-wide); O_APPEND keeps their lines whole.
	logPath := filepath.Join(logDir, "access.log")
	a.mustAPI(http.MethodPut, "/v1/config", fmt.Sprintf(`{"Kind":"proxy-defaults","Name":"global","AccessLogs":{"Enabled":true,"Type":"file","Path":%q}}`, logPath))
	// (Each agent's proxy turns them on when its own agent has the entry,
	// and the deny intention's deletion may still be on its way: lines
	// of 403s may come first.)
	var lines []accessLine
	var outbound, inbound accessLine
	okLine := func(peer bool) func(accessLine) bool {
		return func(l accessLine) bool {
			return l.str("request_id") == "e2e-ok" && l.num("response_code") == 200 && (l.str("downstream_peer_uri_san") != "") == peer
		}
	}
	testkit.WaitFor(t, 20*time.Second, "access log lines of an allowed request on both hops", func() bool {
		get(webURL+"/ok", "e2e-ok")
		lines = readAccessLines(t, logPath)
		outbound, inbound = findLine(lines, okLine(false)), findLine(lines, okLine(true))
		return outbound != nil && inbound != nil
	})
	for _, l := range []accessLine{outbound, inbound} {
		if l.num("response_code") != 200 || l.str("response_flags") != "-" || l.str("method") != "GET" || l.str("path") != "/ok" ||
			l.str("protocol") != "HTTP/1.1" || l.str("user_agent") != "vmesh-e2e" || l.str("trace_id") != "4bf92f3577b34da6a3ce929d0e0e4736" ||
			l.str("upstream_host") == "" || l.str("upstream_cluster") == "" || l.str("start_time") == "" || l.str("response_code_details") != "via_upstream" {
			t.Errorf("allowed request's line: %v", l)
		}
	}
	if !strings.HasSuffix(inbound.str("downstream_peer_uri_san"), "/svc/client") {
		t.Errorf("B's line names the peer %q, want client's SPIFFE ID", inbound.str("downstream_peer_uri_san"))
	}
	if outbound.str("upstream_host") != hostPort(b.ip, 15443) {
		t.Errorf("A's line: upstream_host %q, want B's mesh port", outbound.str("upstream_host"))
	}

	// Denied by an intention: B answers 403 (RBAC details, no flag, as
	// Envoy), A passes it on.
	a.intention("client", "web", "deny")
	// (B's lines of calls made before the intention reached it are 200s.)
	deniedOnB := func(l accessLine) bool {
		return l.str("request_id") == "e2e-denied" && l.str("downstream_peer_uri_san") != "" && l.num("response_code") == 403
	}
	testkit.WaitFor(t, 10*time.Second, "a denied request's line", func() bool {
		get(webURL+"/denied", "e2e-denied")
		lines = readAccessLines(t, logPath)
		return findLine(lines, deniedOnB) != nil
	})
	denied := findLine(lines, deniedOnB)
	if denied.str("response_code_details") != "rbac_access_denied_matched_policy[none]" || denied.str("response_flags") != "-" {
		t.Errorf("denied request's line on B: %v", denied)
	}
	a.deleteIntention("client", "web")

	// No upstream: A answers 503 with UH.
	if code, _ := get(ghostURL+"/x", "e2e-ghost"); code != http.StatusServiceUnavailable {
		t.Fatalf("ghost: %d", code)
	}
	testkit.WaitFor(t, 10*time.Second, "the no-upstream request's line", func() bool {
		lines = readAccessLines(t, logPath)
		return findLine(lines, func(l accessLine) bool { return l.str("request_id") == "e2e-ghost" }) != nil
	})
	ghost := findLine(lines, func(l accessLine) bool { return l.str("request_id") == "e2e-ghost" })
	if ghost.num("response_code") != 503 || ghost.str("response_flags") != "UH" || ghost.str("response_code_details") != "no_healthy_upstream" || ghost.str("upstream_host") != "" {
		t.Errorf("no-upstream request's line: %v", ghost)
	}

	// A TCP connection: logged when it closes, with its bytes.
	testkit.WaitFor(t, 10*time.Second, "a TCP echo", func() bool {
		got, err := tcpEchoCall(echoAddr, "ping", 2*time.Second)
		return err == nil && got == "echo-1: ping\n"
	})
	testkit.WaitFor(t, 10*time.Second, "the TCP connection's lines", func() bool {
		lines = readAccessLines(t, logPath)
		return findLine(lines, func(l accessLine) bool {
			return strings.Contains(l.str("upstream_cluster"), "echo") && l.num("bytes_received") > 0 && l.str("downstream_peer_uri_san") == ""
		}) != nil
	})
	tcpLine := findLine(lines, func(l accessLine) bool {
		return strings.Contains(l.str("upstream_cluster"), "echo") && l.num("bytes_received") > 0 && l.str("downstream_peer_uri_san") == ""
	})
	// Listener logs: plaintext to B's mesh port is refused before any
	// filter chain; the listener's logger writes it, with NR.
	meshAddr := hostPort(b.ip, 15443)
	testkit.WaitFor(t, 10*time.Second, "the refused plaintext connection's line", func() bool {
		if c, err := net.DialTimeout("tcp", meshAddr, 2*time.Second); err == nil {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			io.WriteString(c, "GET / HTTP/1.1\r\n\r\n")
			io.ReadAll(c)
			c.Close()
		}
		lines = readAccessLines(t, logPath)
		return findLine(lines, func(l accessLine) bool {
			return l.str("downstream_local_address") == meshAddr && l.str("connection_termination_details") == "non_mesh_connection_refused"
		}) != nil
	})
	refused := findLine(lines, func(l accessLine) bool {
		return l.str("connection_termination_details") == "non_mesh_connection_refused"
	})
	if refused.str("response_flags") != "NR" || refused["upstream_cluster"] != nil {
		t.Errorf("refused plaintext connection's line: %v", refused)
	}
	// A certificate from another CA: the handshake fails, the listener
	// logs it with the SNI asked for.
	foreign := foreignMeshCert(t, "vmesh.local", "client")
	tlsFailed := func(l accessLine) bool {
		return l.str("connection_termination_details") == "downstream_tls_handshake_failed" && l.str("requested_server_name") == "web.mesh"
	}
	testkit.WaitFor(t, 10*time.Second, "the failed TLS handshake's line", func() bool {
		if c, err := tls.Dial("tcp", meshAddr, &tls.Config{ServerName: "web.mesh", Certificates: []tls.Certificate{foreign},
			NextProtos: []string{"http/1.1"}, InsecureSkipVerify: true}); err == nil {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: web\r\n\r\n")
			io.ReadAll(c)
			c.Close()
		}
		lines = readAccessLines(t, logPath)
		return findLine(lines, tlsFailed) != nil
	})

	if tcpLine["method"] != nil || tcpLine.num("bytes_sent") < float64(len("echo-1: ping\n")) || tcpLine.str("response_flags") != "-" || tcpLine.str("upstream_host") != hostPort(b.ip, 15443) {
		t.Errorf("TCP connection's line: %v", tcpLine)
	}
}
