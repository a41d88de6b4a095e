package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
)

// startWithNoFile starts the node with an open file limit of nofile (soft
// and hard), as `LimitNOFILE=` in its unit would.
func (n *node) startWithNoFile(nofile int, extra ...string) *node {
	n.t.Helper()
	args := append([]string{"agent", "-node", n.name, "-bind", n.ip, "-client", n.ip, "-data-dir", n.dataDir,
		"-services-dir", "", "-log-level", "info"}, n.args...)
	args = append(args, extra...)
	sh := fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, nofile)
	n.p = runProc(n.t, exec.Command("sh", append([]string{"-c", sh, vmeshBin(n.t)}, args...)...))
	n.p.waitHTTP(30 * time.Second)
	return n
}

// metricSum adds up the series of a metric on the node's admin listener
// whose labels contain every one of labels ("" when it serves none).
func (n *node) metricSum(name string, labels ...string) (float64, bool) {
	resp, err := http.Get("http://" + n.ip + ":15000/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		return 0, false
	}
	var sum float64
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if ok {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum, true
}

// floodHelperEnv tells a copy of this test binary to be a flood helper:
// "ADDR N" (TestFloodHelper).
const floodHelperEnv = "VMESH_E2E_FLOOD"

// floodHelper runs this test binary as TestFloodHelper, which opens n
// connections to addr and holds them until the test ends; it returns how
// many opened, how many were reset while connecting (refused by the proxy
// before connect returned) and how many failed otherwise.
func floodHelper(t *testing.T, addr string, n int) (dialed, reset, failed int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestFloodHelper$", "-test.v")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d", floodHelperEnv, addr, n))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close() // the helper lets go of its connections and exits
		cmd.Wait()
	})
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "flood: dialed=%d reset=%d failed=%d", &dialed, &reset, &failed); err == nil {
			go io.Copy(io.Discard, out)
			return dialed, reset, failed
		}
	}
	t.Fatalf("the flood helper ended without a result: %v", sc.Err())
	return 0, 0, 0
}

// TestFloodHelper is not a test: TestProxyConnectionFlood runs it in a
// process of its own to open and hold connections.
func TestFloodHelper(t *testing.T) {
	spec := os.Getenv(floodHelperEnv)
	if spec == "" {
		t.Skip("a helper process of TestProxyConnectionFlood")
	}
	var addr string
	var n int
	if _, err := fmt.Sscanf(spec, "%s %d", &addr, &n); err != nil {
		t.Fatalf("%s=%q: %v", floodHelperEnv, spec, err)
	}
	var (
		mu     sync.Mutex
		conns  []net.Conn
		reset  atomic.Int64
		failed atomic.Int64
		wg     sync.WaitGroup
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n / 4 {
				c, err := net.DialTimeout("tcp", addr, 10*time.Second)
				if errors.Is(err, syscall.ECONNRESET) {
					reset.Add(1)
					continue
				}
				if err != nil {
					failed.Add(1)
					continue
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	fmt.Printf("flood: dialed=%d reset=%d failed=%d\n", len(conns), reset.Load(), failed.Load())
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
}

// TestProxyConnectionFlood: n1, the raft leader of three servers, runs
// with an open file limit of 8,192, so its proxy's defaults allow 1,194
// downstream connections, 597 per listener (below the cluster's circuit
// breaker of 1,024 connections). A client opens 20,000 connections to one
// of its explicit upstream listeners and holds them: 597 are served,
// every other one is reset at accept and counted, and
// meanwhile n1's API answers every request, a write through n2 commits,
// n1 keeps its leadership, and another upstream listener on n1 serves.
func TestProxyConnectionFlood(t *testing.T) {
	skipShort(t)
	t.Parallel()
	const prefix = "127.45.0."
	nodes := []*node{newNode(t, "n1", prefix+"1", "-proxy").startWithNoFile(8192, "-bootstrap")}
	testkit.WaitFor(t, 15*time.Second, "n1 leads", func() bool { return nodes[0].leader() != "" })
	for i := 2; i <= 3; i++ {
		tok := nodes[0].tokenFile("1h")
		nodes = append(nodes, newNode(t, fmt.Sprintf("n%d", i), fmt.Sprintf("%s%d", prefix, i)).
			start("-join", nodes[0].clusterAddr(), "-token-file", tok))
	}
	n1, n2 := nodes[0], nodes[1]
	leader := n1.leader()
	for _, n := range nodes {
		testkit.WaitFor(t, 20*time.Second, n.name+" follows n1", func() bool { return n.leader() == leader })
	}

	// Two apps, reached through two upstream listeners of n1's client.
	echo := startTCPEcho(t, n1.ip, "echo-1")
	other := startTCPEcho(t, n1.ip, "other-1")
	n1.registerJSON(fmt.Sprintf(`{"ID":"echo-1","Name":"echo","Address":%q,"Port":%d,"Meta":{"external-source":"test"}}`, n1.ip, echo))
	n1.registerJSON(fmt.Sprintf(`{"ID":"other-1","Name":"other","Address":%q,"Port":%d,"Meta":{"external-source":"test"}}`, n1.ip, other))
	n1.registerJSON(`{"ID":"client-1","Name":"client","Port":1,"Connect":{"SidecarService":{"Proxy":{"Upstreams":[` +
		`{"DestinationName":"echo","LocalBindPort":21451},{"DestinationName":"other","LocalBindPort":21452}]}}}}`)
	flooded, spare := hostPort(n1.ip, 21451), hostPort(n1.ip, 21452)
	for _, addr := range []string{flooded, spare} {
		testkit.WaitFor(t, 20*time.Second, "an echo through "+addr, func() bool {
			got, err := tcpEchoCall(addr, "hi\n", time.Second)
			return err == nil && strings.HasSuffix(got, ": hi\n")
		})
	}
	listener := `listener="vmesh/upstream/` + flooded + `"`

	// While the flood runs: n1's API, a write through n2 (forwarded to
	// n1), n1's leadership, and the other listener.
	stop := make(chan struct{})
	var (
		mu        sync.Mutex
		problems  []string
		latencies []time.Duration
		writes    int
		spareOK   int
	)
	problem := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	api := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var watch sync.WaitGroup
	watch.Add(1)
	go func() {
		defer watch.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond): // pacing the probe, not waiting for a result
			}
			start := time.Now()
			resp, err := api.Get("http://" + n1.httpAddr() + "/v1/status/leader")
			if err != nil {
				problem("n1's API: %v", err)
				continue
			}
			var l string
			json.NewDecoder(resp.Body).Decode(&l)
			resp.Body.Close()
			mu.Lock()
			latencies = append(latencies, time.Since(start))
			mu.Unlock()
			if l != leader {
				problem("n1 names leader %q, want %q", l, leader)
			}
			if i%10 == 0 {
				req, _ := http.NewRequest(http.MethodPut, "http://"+n2.httpAddr()+"/v1/agent/service/register",
					strings.NewReader(fmt.Sprintf(`{"ID":"probe-%d","Name":"probe","Port":%d}`, i, 1000+i)))
				if resp, err := api.Do(req); err != nil || resp.StatusCode != 200 {
					problem("a write through n2: %v %v", resp, err)
				} else {
					resp.Body.Close()
					mu.Lock()
					writes++
					mu.Unlock()
				}
				if got, err := tcpEchoCall(spare, "still\n", 2*time.Second); err != nil || !strings.HasSuffix(got, ": still\n") {
					problem("the other listener: %q, %v", got, err)
				} else {
					mu.Lock()
					spareOK++
					mu.Unlock()
				}
			}
		}
	}()

	// The flood: 20,000 connections, held open by two helper processes
	// (one process may hold fewer than 20,000 descriptors here).
	const total = 20000
	start := time.Now()
	dialed, reset, failed := 0, 0, 0
	for range 2 {
		d, r, f := floodHelper(t, flooded, total/2)
		dialed, reset, failed = dialed+d, reset+r, failed+f
	}
	t.Logf("%d connections opened to %s in %s, %d reset while connecting, %d failed otherwise",
		dialed, flooded, time.Since(start).Round(time.Millisecond), reset, failed)
	var served, refused float64
	if !testkit.Eventually(60*time.Second, func() bool {
		served, _ = n1.metricSum("vmesh_active_connections", listener)
		refused, _ = n1.metricSum("vmesh_connections_refused_total", listener)
		return int(served+refused) >= dialed
	}) {
		t.Fatalf("after 60 s, %v connections served and %v refused of %d opened", served, refused, dialed)
	}
	close(stop)
	watch.Wait()

	if failed > total/10 {
		t.Errorf("%d of %d connections neither opened nor refused", failed, total)
	}
	if served != 597 {
		t.Errorf("%v connections served on the flooded listener, want its default limit of 597 (RLIMIT_NOFILE 8,192)", served)
	}
	// A connection the proxy reset as the client's connect returned may
	// count as refused here and as failed there: at least every one
	// opened, at most every one tried.
	if lim, _ := n1.metricSum("vmesh_connections_refused_total", listener, `limit="listener"`); int(lim) < dialed-597 || int(lim) > total-597 {
		t.Errorf("%v connections refused by the listener's limit, want %d to %d", lim, dialed-597, total-597)
	}
	for _, p := range problems {
		t.Error(p)
	}
	if writes == 0 || spareOK == 0 || len(latencies) == 0 {
		t.Errorf("during the flood: %d writes through n2, %d echoes on the other listener, %d API calls", writes, spareOK, len(latencies))
	}
	slices.Sort(latencies)
	if len(latencies) > 0 {
		t.Logf("n1's API during the flood: %d calls, median %s, p99 %s, max %s; %d writes through n2; %d echoes on the other listener",
			len(latencies), latencies[len(latencies)/2], latencies[len(latencies)*99/100], latencies[len(latencies)-1], writes, spareOK)
	}
	if l := n2.leader(); l != leader {
		t.Errorf("after the flood n2 names leader %q, want n1 (%q)", l, leader)
	}
}
