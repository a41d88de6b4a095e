package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
)

// TestScaleAgents is a measurement, run only on request: 3 servers and
// VMESH_SCALE_AGENTS clients (up to 240), every one a real `vmesh agent`
// process on its own loopback IP (127.23.0.x). It reports
//
//   - how long the clients take, from the moment they are all started, to
//     be members of the cluster, alive on the leader, with a leader known
//     on every client;
//   - which server each client's replica stream follows;
//   - how long a registration on one client takes to show in every
//     agent's HTTP API (a blocking catalog query on each of them), over
//     VMESH_SCALE_REGISTRATIONS registrations (default 20);
//   - the idle CPU of the leader and of the clients, from /proc/PID/stat
//     over 20 s with nothing written.
//
// It asserts that every client joins and every agent sees every
// registration, nothing about speed. VMESH_SCALE_CONFIG names an agent
// config file that every agent reads too.
//
//	VMESH_SCALE_AGENTS=80 go test -count=1 -timeout 30m -run TestScaleAgents -v ./mesh/e2e/
func TestScaleAgents(t *testing.T) {
	env := os.Getenv("VMESH_SCALE_AGENTS")
	if env == "" {
		t.Skip("a measurement with up to 240 agent processes: set VMESH_SCALE_AGENTS=80 to run it")
	}
	count, err := strconv.Atoi(env)
	if err != nil || count < 1 || count > 240 {
		t.Fatalf("VMESH_SCALE_AGENTS=%q: want a number of clients from 1 to 240 (127.23.0.11 up to .250)", env)
	}
	regs := 20
	if s := os.Getenv("VMESH_SCALE_REGISTRATIONS"); s != "" {
		if regs, err = strconv.Atoi(s); err != nil || regs < 1 {
			t.Fatalf("VMESH_SCALE_REGISTRATIONS=%q: want a number of registrations, at least 1", s)
		}
	}
	skipShort(t)
	t.Parallel()
	// Info, not debug: 240 agents' debug logs would be most of the work.
	quiet := []string{"-log-level", "info"}
	// VMESH_SCALE_CONFIG: an agent config file every agent also reads,
	// to measure a setting (cluster { heartbeat_interval = "5s" }).
	if f := os.Getenv("VMESH_SCALE_CONFIG"); f != "" {
		quiet = append(quiet, "-config", f)
	}
	servers := bootCluster(t, "127.23.0.", 3, quiet...)
	testkit.WaitFor(t, 30*time.Second, "three raft members", func() bool {
		r := roles(servers[0].members())
		return r["leader"] == 1 && r["leader"]+r["voter"] == 3
	})
	code, out, errs := servers[0].cli("token", "create", "-ttl", "1h", "-uses", strconv.Itoa(count))
	if code != 0 {
		t.Fatalf("token create: %d %s", code, errs)
	}
	tok := writeToken(t, strings.TrimSpace(out))

	// Join: every client started at once, as after a fleet-wide restart.
	clients := make([]*node, count)
	start := time.Now()
	for i := range clients {
		clients[i] = newClientNode(t, fmt.Sprintf("c%d", i+1), fmt.Sprintf("127.23.0.%d", 11+i), quiet...).
			launch("-join", servers[0].clusterAddr(), "-token-file", tok)
	}
	for _, c := range clients {
		c.p.waitHTTP(5 * time.Minute)
	}
	listening := time.Since(start)
	testkit.WaitFor(t, 5*time.Minute, fmt.Sprintf("%d clients alive on the leader", count), func() bool {
		alive := 0
		for _, m := range clusterMembers(servers[0]) {
			if m.NodeRole == "client" && m.Status == "alive" {
				alive++
			}
		}
		return alive == count
	})
	for _, c := range clients {
		testkit.WaitFor(t, 5*time.Minute, c.name+" knows the leader", func() bool { return c.leader() != "" })
	}
	joined := time.Since(start)

	// Propagation: a registration on client k, until the catalog of every
	// agent (servers and clients) serves it.
	agents := append(append([]*node{}, servers...), clients...)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2}}
	var lat, worst []time.Duration
	for k := range regs {
		id := fmt.Sprintf("scale-%d", k)
		arrive := make([]time.Duration, len(agents))
		var wg sync.WaitGroup
		ready := make(chan struct{})
		var t0 time.Time
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		for i, a := range agents {
			// Each watcher reads the current index first, so its blocking
			// query is open before the write.
			idx, err := catalogIndex(ctx, hc, a, "scale", id)
			if err != nil {
				cancel()
				t.Fatalf("%s: %v", a.name, err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-ready
				for {
					next, err := blockingCatalog(ctx, hc, a, "scale", idx, id)
					if err == errFound {
						arrive[i] = time.Since(t0)
						return
					}
					if err != nil {
						t.Errorf("%s watching for %s: %v", a.name, id, err)
						return
					}
					idx = next
				}
			}()
		}
		t0 = time.Now()
		close(ready)
		if err := clients[k%count].register(id, "scale"); err != nil {
			cancel()
			t.Fatalf("registering %s on %s: %v", id, clients[k%count].name, err)
		}
		wg.Wait()
		cancel()
		if t.Failed() {
			t.FailNow()
		}
		lat = append(lat, arrive...)
		worst = append(worst, slices.Max(arrive))
	}
	slices.Sort(lat)
	p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))].Round(100 * time.Microsecond) }

	// Which server each client's replica stream follows (a client moves
	// off its join server within a second of knowing the others).
	streams := map[string]int{}
	for _, c := range clients {
		var self struct {
			Stats struct{ Raft map[string]string }
		}
		if err := getJSON("http://"+c.httpAddr()+"/v1/agent/self", &self); err != nil {
			t.Fatalf("%s: /v1/agent/self: %v", c.name, err)
		}
		streams[self.Stats.Raft["replica_server"]]++
	}
	var spread []string
	for _, s := range servers {
		spread = append(spread, fmt.Sprint(streams[s.clusterAddr()]))
	}

	// Idle CPU over 20 s with nothing written.
	var leader *node
	for _, s := range servers {
		if s.clusterAddr() == servers[0].leader() {
			leader = s
		}
	}
	if leader == nil {
		t.Fatalf("no server is the leader %q", servers[0].leader())
	}
	pids := []int{leader.p.cmd.Process.Pid}
	for _, c := range clients {
		pids = append(pids, c.p.cmd.Process.Pid)
	}
	cpu0 := procCPU(t, pids)
	w0 := time.Now()
	time.Sleep(20 * time.Second) // the measurement window itself, not a wait for a condition
	cpu1 := procCPU(t, pids)
	wall := time.Since(w0)
	share := func(d time.Duration) string { return fmt.Sprintf("%.2f%%", 100*d.Seconds()/wall.Seconds()) }
	var clientsCPU, maxClient time.Duration
	for i := 1; i < len(pids); i++ {
		d := cpu1[i] - cpu0[i]
		clientsCPU += d
		maxClient = max(maxClient, d)
	}
	t.Logf("\n| clients | all listening | all joined and alive | streams on n1/n2/n3 | registration → every agent p50 | p99 | max | slowest agent, mean of %d | leader idle CPU | client idle CPU (mean) | (max) |\n|---|---|---|---|---|---|---|---|---|---|---|\n| %d | %s | %s | %s | %s | %s | %s | %s | %s of a core | %s | %s |",
		regs, count, listening.Round(100*time.Millisecond), joined.Round(100*time.Millisecond), strings.Join(spread, "/"), p(0.5), p(0.99), p(1),
		(sum(worst) / time.Duration(len(worst))).Round(100*time.Microsecond),
		share(cpu1[0]-cpu0[0]), share(clientsCPU/time.Duration(count)), share(maxClient))
}

func sum(ds []time.Duration) time.Duration {
	var s time.Duration
	for _, d := range ds {
		s += d
	}
	return s
}

// errFound: the blocking query's answer holds the instance.
var errFound = fmt.Errorf("found")

// catalogIndex is the X-Consul-Index of a's catalog for service; an error
// if the instance id is there already.
func catalogIndex(ctx context.Context, hc *http.Client, a *node, service, id string) (uint64, error) {
	idx, err := blockingCatalog(ctx, hc, a, service, 0, id)
	if err == errFound {
		return 0, fmt.Errorf("%s is in the catalog before it was registered", id)
	}
	return idx, err
}

// blockingCatalog asks a for service's instances, blocking from index (0:
// not at all), and returns the answer's index, or errFound when id is
// among the instances.
func blockingCatalog(ctx context.Context, hc *http.Client, a *node, service string, index uint64, id string) (uint64, error) {
	url := "http://" + a.httpAddr() + "/v1/catalog/service/" + service + "?stale"
	if index > 0 {
		url += "&wait=60s&index=" + strconv.FormatUint(index, 10)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	var list []struct{ ServiceID string }
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return 0, fmt.Errorf("GET %s: %w", url, err)
	}
	for _, s := range list {
		if s.ServiceID == id {
			return 0, errFound
		}
	}
	next, err := strconv.ParseUint(resp.Header.Get("X-Consul-Index"), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("GET %s: X-Consul-Index %q: %w", url, resp.Header.Get("X-Consul-Index"), err)
	}
	return next, nil
}

// procCPU is the user+system CPU time of each process so far, from
// /proc/PID/stat (fields 14 and 15, in clock ticks of 1/100 s, Linux's
// USER_HZ).
func procCPU(t *testing.T, pids []int) []time.Duration {
	t.Helper()
	out := make([]time.Duration, len(pids))
	for i, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		// The command name (field 2) is in parentheses and may hold spaces.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 13 {
			t.Fatalf("/proc/%d/stat: %q", pid, s)
		}
		utime, err1 := strconv.ParseInt(f[11], 10, 64)
		stime, err2 := strconv.ParseInt(f[12], 10, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("/proc/%d/stat: utime %q, stime %q", pid, f[11], f[12])
		}
		out[i] = time.Duration(utime+stime) * 10 * time.Millisecond
	}
	return out
}
