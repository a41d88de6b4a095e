package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
	"github.com/vmesh/vmesh/mesh"
	"github.com/vmesh/vmesh/mesh/config"
)

// propAgents are the cluster sizes BenchmarkClusterPropagation runs. With
// the default cluster.voters = 3, the agents beyond the third join as
// nonvoters.
var propAgents = []int{3, 5, 10}

const (
	// propService is the service every measured instance belongs to.
	propService = "prop"
	// propNet: agent k (1-based) binds 127.0.20.k, with the default
	// ports (HTTP 8500, cluster 7400), as if each were its own VM.
	propNet = "127.0.20."
	// propTimeout bounds one wait for an instance to appear or vanish on
	// every node; a healthy cluster needs a fraction of a second.
	propTimeout = 10 * time.Second
	// propBatch is how many instances pile up before they are removed.
	propBatch = 20
)

// BenchmarkClusterPropagation measures how long a registration takes to
// reach every agent of a cluster: each iteration registers a new instance
// of service "prop" on one agent and waits until a blocking query on every
// agent (GET /v1/catalog/service/prop?index=...) has returned it. The
// latency of an iteration is the latest of those answers minus the moment
// the register request was sent.
//
// The register goes to a follower, the highest-numbered agent (a voter
// with 3 agents, a nonvoter with 5 and 10): every host writes to its own
// agent and all but one of them follow, so this is the common path, with
// the hop to the leader and the follower's own wait for the commit. The
// baseline, measured in the same iterations, is the register call alone
// (reg-*): it returns once the follower has applied the write itself
// (read-your-writes). As a second metric, each iteration also registers
// an instance on the leader (leader-*), outside the timer.
//
// Each measurement starts from a quiet catalog: the previous instance is on
// every agent. Every propBatch instances, all of them are deregistered at
// once (untimed) and the benchmark waits until no agent has any, so an
// answer never carries more than propBatch instances (a few kB of JSON).
// Deregistering one by one would double the run time: a removal takes
// as long to propagate as a registration.
func BenchmarkClusterPropagation(b *testing.B) {
	for _, n := range propAgents {
		b.Run(fmt.Sprintf("agents=%d", n), func(b *testing.B) {
			c := startCluster(b, n)
			origin := c.lastFollower()
			leader := c.leader
			s := c.watch()

			// Warm up connections and the origin's readiness outside
			// the measurement.
			var placed []instance
			for _, at := range []int{origin, leader} {
				id := fmt.Sprintf("prop-warmup-n%d", at+1)
				if _, _, err := c.propagate(s, at, id); err != nil {
					b.Fatal(err)
				}
				placed = append(placed, instance{at, id})
			}

			var vis, reg, lvis, lreg []time.Duration
			i := 0
			for b.Loop() {
				id := fmt.Sprintf("prop-%d", i)
				r, v, err := c.propagate(s, origin, id)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				reg, vis = append(reg, r), append(vis, v)
				placed = append(placed, instance{origin, id})

				id = fmt.Sprintf("prop-leader-%d", i)
				if r, v, err = c.propagate(s, leader, id); err != nil {
					b.Fatal(err)
				}
				lreg, lvis = append(lreg, r), append(lvis, v)
				placed = append(placed, instance{leader, id})

				if len(placed) >= propBatch {
					if err := c.removeAll(s, placed); err != nil {
						b.Fatal(err)
					}
					placed = placed[:0]
				}
				i++
				b.StartTimer()
			}
			// The leader-* metrics are only what they say if it still leads.
			var l string
			if err := getJSON(c.client, c.base(origin)+"/v1/status/leader", &l); err != nil || l != nodeIP(leader)+":7400" {
				b.Errorf("leader after the run: %q, %v; want n%d (%s:7400) throughout", l, err, leader+1, nodeIP(leader))
			}
			reportDist(b, vis, "")
			reportDist(b, reg, "reg-")
			reportDist(b, lvis, "leader-")
			reportDist(b, lreg, "leader-reg-")
		})
	}
}

// reportDist reports the p50, p99 and mean of lat in milliseconds, with
// units prefixed by prefix (e.g. "reg-p50-ms").
func reportDist(b *testing.B, lat []time.Duration, prefix string) {
	b.Helper()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	b.ReportMetric(ms(percentile(lat, 50)), prefix+"p50-ms")
	b.ReportMetric(ms(percentile(lat, 99)), prefix+"p99-ms")
	b.ReportMetric(ms(sum/time.Duration(len(lat))), prefix+"mean-ms")
}

// benchCluster is n in-process agents forming one cluster.
type benchCluster struct {
	agents []*mesh.Agent // agents[k] is node n<k+1> on 127.0.20.<k+1>
	leader int           // index into agents
	level  *slog.LevelVar
	tr     *http.Transport
	client *http.Client

	stopWatch context.CancelFunc
	watchers  sync.WaitGroup
}

func nodeIP(k int) string { return propNet + strconv.Itoa(k+1) }

func (c *benchCluster) base(k int) string { return "http://" + nodeIP(k) + ":8500" }

// startCluster bootstraps agent 1, joins the others to it with a token at
// start, and returns once every agent knows the leader, the leader lists
// all of them with the expected voters, and the leader has written every
// node's liveness check (its last write after a join, so the catalog is
// quiet from then on). The cluster is closed when the benchmark ends.
func startCluster(b *testing.B, n int) *benchCluster {
	b.Helper()
	// Before the Cleanup below, so that the data dirs outlive the agents.
	root := b.TempDir()
	c := &benchCluster{level: new(slog.LevelVar), tr: &http.Transport{MaxIdleConnsPerHost: 4}}
	c.level.Set(slog.LevelError)
	c.client = &http.Client{Transport: c.tr, Timeout: 30 * time.Second}
	b.Cleanup(func() { c.close(b) })
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: c.level}))

	c.startAgent(b, logger, root, 0, "", "")
	var tok struct{ Token string }
	waitUntil(b, 30*time.Second, "agent 1 leads and issues join tokens", func() error {
		body, err := put(c.client, c.base(0)+fmt.Sprintf("/v1/vmesh/token?ttl=1h&uses=%d", max(n-1, 1)), nil) // one join each
		if err != nil {
			return err
		}
		return json.Unmarshal(body, &tok)
	})
	for k := 1; k < n; k++ {
		c.startAgent(b, logger, root, k, nodeIP(0)+":7400", tok.Token)
	}

	for k := range n {
		waitUntil(b, 30*time.Second, fmt.Sprintf("n%d knows the leader", k+1), func() error {
			var l string
			if err := getJSON(c.client, c.base(k)+"/v1/status/leader", &l); err != nil {
				return err
			}
			if l == "" {
				return errors.New("no leader")
			}
			if k == 0 {
				ip, _, _ := strings.Cut(l, ":")
				i, err := strconv.Atoi(strings.TrimPrefix(ip, propNet))
				if err != nil || !strings.HasPrefix(ip, propNet) || i < 1 || i > n {
					return fmt.Errorf("leader %q is none of the agents", l)
				}
				c.leader = i - 1
			}
			return nil
		})
	}
	voters := min(n, 3)
	waitUntil(b, 30*time.Second, fmt.Sprintf("%d members, %d of them voters, all alive", n, voters), func() error {
		var ms []struct{ Name, Role, Status string }
		if err := getJSON(c.client, c.base(c.leader)+"/v1/vmesh/members", &ms); err != nil {
			return err
		}
		got := 0
		for _, m := range ms {
			if m.Name != "" && m.Status == "alive" && (m.Role == "leader" || m.Role == "voter") {
				got++
			}
		}
		if len(ms) != n || got != voters || slices.ContainsFunc(ms, func(m struct{ Name, Role, Status string }) bool {
			return m.Name == "" || m.Status != "alive"
		}) {
			return fmt.Errorf("members: %+v", ms)
		}
		return nil
	})
	waitUntil(b, 30*time.Second, "a passing node check for every agent", func() error {
		var checks []struct{ Node, CheckID string }
		if err := getJSON(c.client, c.base(c.leader)+"/v1/health/state/passing", &checks); err != nil {
			return err
		}
		nodes := map[string]bool{}
		for _, ch := range checks {
			if ch.CheckID == "serfHealth" {
				nodes[ch.Node] = true
			}
		}
		if len(nodes) != n {
			return fmt.Errorf("node checks passing on %d of %d nodes", len(nodes), n)
		}
		return nil
	})
	return c
}

// startAgent starts agent k; join and token are empty for the first one,
// which bootstraps.
func (c *benchCluster) startAgent(b *testing.B, logger *slog.Logger, root string, k int, join, token string) {
	b.Helper()
	name := fmt.Sprintf("n%d", k+1)
	cfg := config.DefaultConfig()
	cfg.NodeName = name
	cfg.DataDir = filepath.Join(root, name)
	cfg.Bootstrap = join == ""
	cfg.Server = true // every bench agent is a raft member
	cfg.Join, cfg.Token = join, token
	cfg.BindAddr, cfg.ClientAddr = nodeIP(k), nodeIP(k)
	cfg.Addresses.HTTP = nodeIP(k) + ":8500"
	cfg.Ports.Cluster = 7400
	cfg.ServicesDir = ""
	cfg.LogLevel = "error"
	if err := cfg.Validate(); err != nil {
		b.Fatalf("config of %s: %v", name, err)
	}
	a := mesh.NewAgent(cfg, logger.With("node", name), io.Discard)
	// Start joins synchronously: certificate, raft, then AddPeer.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		b.Fatalf("starting %s: %v", name, err)
	}
	c.agents = append(c.agents, a)
}

// lastFollower is the highest-numbered agent that does not lead.
func (c *benchCluster) lastFollower() int {
	k := len(c.agents) - 1
	if k == c.leader {
		k--
	}
	return k
}

// close stops the watchers, then every agent, the leader last.
func (c *benchCluster) close(b *testing.B) {
	if c.stopWatch != nil {
		c.stopWatch()
		c.watchers.Wait()
	}
	// Raft logs an error for every heartbeat to a peer that has just
	// stopped; here that is expected, not news.
	c.level.Set(slog.LevelError + 4)
	// Hang up first: an idle pooled connection holds an agent's graceful
	// shutdown.
	c.tr.CloseIdleConnections()
	for k := len(c.agents) - 1; k >= 0; k-- {
		if k == c.leader {
			continue
		}
		if err := c.agents[k].Close(); err != nil {
			b.Errorf("closing n%d: %v", k+1, err)
		}
	}
	if c.leader < len(c.agents) {
		if err := c.agents[c.leader].Close(); err != nil {
			b.Errorf("closing n%d: %v", c.leader+1, err)
		}
	}
}

// propagate registers instance id of propService on agent at and waits
// until every agent's blocking query has returned it. reg is how long the
// register call took, visible how long until the last agent had it, both
// from the moment the request was sent.
func (c *benchCluster) propagate(s *sightings, at int, id string) (reg, visible time.Duration, err error) {
	body := fmt.Appendf(nil, `{"ID":%q,"Name":%q,"Port":8080}`, id, propService)
	start := time.Now()
	if _, err := put(c.client, c.base(at)+"/v1/agent/service/register", body); err != nil {
		return 0, 0, fmt.Errorf("registering %s on n%d: %w", id, at+1, err)
	}
	reg = time.Since(start)
	last, err := s.wait(id, true)
	if err != nil {
		return 0, 0, fmt.Errorf("after registering on n%d: %w", at+1, err)
	}
	return reg, last.Sub(start), nil
}

// instance is an instance of propService registered on agents[at].
type instance struct {
	at int
	id string
}

// removeAll deregisters every instance, concurrently, and waits until no
// agent has any of them.
func (c *benchCluster) removeAll(s *sightings, insts []instance) error {
	errs := make([]error, len(insts))
	var wg sync.WaitGroup
	for i, in := range insts {
		wg.Go(func() {
			if _, err := put(c.client, c.base(in.at)+"/v1/agent/service/deregister/"+in.id, nil); err != nil {
				errs[i] = fmt.Errorf("deregistering %s on n%d: %w", in.id, in.at+1, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, in := range insts {
		if _, err := s.wait(in.id, false); err != nil {
			return fmt.Errorf("after deregistering: %w", err)
		}
	}
	return nil
}

// sightings is what the blocking queries have seen: for every agent, the
// instances of propService its last answer held, each with the time of
// the first answer that held it.
type sightings struct {
	mu      sync.Mutex
	seen    []map[string]time.Time
	changed chan struct{} // closed and replaced on every answer
	err     error
}

// watch starts one goroutine per agent that keeps a blocking query on
// propService open against it, as a Consul client watching the service
// would; close stops them.
func (c *benchCluster) watch() *sightings {
	s := &sightings{seen: make([]map[string]time.Time, len(c.agents)), changed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	c.stopWatch = cancel
	for k := range c.agents {
		s.seen[k] = map[string]time.Time{}
		c.watchers.Go(func() { s.follow(ctx, c.client, k, c.base(k)) })
	}
	return s
}

func (s *sightings) follow(ctx context.Context, client *http.Client, k int, base string) {
	var index uint64
	for {
		ids, idx, err := serviceIDs(ctx, client, base, index)
		now := time.Now()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.mu.Lock()
			s.err = errors.Join(s.err, fmt.Errorf("watching n%d: %w", k+1, err))
			close(s.changed)
			s.changed = make(chan struct{})
			s.mu.Unlock()
			return
		}
		// An index that goes backwards (a snapshot restore) starts the
		// watch over, as Consul's clients do.
		if idx < index {
			index = 0
		} else {
			index = idx
		}
		s.update(k, ids, now)
	}
}

// serviceIDs is one blocking query: the IDs of propService's instances and
// the X-Consul-Index they are at.
func serviceIDs(ctx context.Context, client *http.Client, base string, index uint64) ([]string, uint64, error) {
	url := fmt.Sprintf("%s/v1/catalog/service/%s?index=%d&wait=5s", base, propService, index)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(resp.Body)
		return nil, 0, fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(msg))
	}
	var list []struct{ ServiceID string }
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return nil, 0, fmt.Errorf("GET %s: %w", url, err)
	}
	idx, err := strconv.ParseUint(resp.Header.Get("X-Consul-Index"), 10, 64)
	if err != nil {
		return nil, 0, fmt.Errorf("GET %s: X-Consul-Index: %w", url, err)
	}
	ids := make([]string, len(list))
	for i, e := range list {
		ids[i] = e.ServiceID
	}
	return ids, idx, nil
}

func (s *sightings) update(k int, ids []string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.seen[k]
	for id := range m {
		if !slices.Contains(ids, id) {
			delete(m, id)
		}
	}
	for _, id := range ids {
		if _, ok := m[id]; !ok {
			m[id] = now
		}
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// wait blocks until every agent holds id (present) or none does (!present),
// and returns the latest first sighting of id among the agents.
func (s *sightings) wait(id string, present bool) (time.Time, error) {
	timeout := time.NewTimer(propTimeout)
	defer timeout.Stop()
	for {
		s.mu.Lock()
		var last time.Time
		var behind []string
		for k, m := range s.seen {
			at, ok := m[id]
			if ok != present {
				behind = append(behind, fmt.Sprintf("n%d", k+1))
			} else if at.After(last) {
				last = at
			}
		}
		err, changed := s.err, s.changed
		s.mu.Unlock()
		switch {
		case err != nil:
			return time.Time{}, err
		case len(behind) == 0:
			return last, nil
		}
		select {
		case <-changed:
		case <-timeout.C:
			state := "holds"
			if !present {
				state = "still holds"
			}
			return time.Time{}, fmt.Errorf("after %s, %s: not every agent %s %s", propTimeout, strings.Join(behind, ", "), state, id)
		}
	}
}

// put sends a PUT and returns the body of a 200 answer.
func put(client *http.Client, url string, body []byte) ([]byte, error) {
	req, err := http.NewRequest(http.MethodPut, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	msg, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("PUT %s: reading the answer: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("PUT %s: %s: %s", url, resp.Status, bytes.TrimSpace(msg))
	}
	return msg, nil
}

// waitUntil polls cond until it returns nil, failing the benchmark with the
// last error after d (which testkit.WaitFor, on a bool, could not say).
func waitUntil(b *testing.B, d time.Duration, what string, cond func() error) {
	b.Helper()
	var err error
	if !testkit.Eventually(d, func() bool { err = cond(); return err == nil }) {
		b.Fatalf("waiting %s for %s: %v", d, what, err)
	}
}
