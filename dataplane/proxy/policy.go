package proxy

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

// Traffic policy of a cluster: how an endpoint is picked, the circuit
// breakers, and outlier detection. The state here outlives snapshots
// (clusterState per cluster name, hostState per endpoint address), so a
// new version of a cluster keeps its counters and ejections.

// clusterState outlives snapshots: counters that a new version of the
// cluster keeps (active connections for the circuit breaker).
type clusterState struct {
	active atomic.Int64
}

// hostState outlives snapshots too, keyed by address: outlier ejection
// and the active count survive an endpoints update.
type hostState struct {
	active atomic.Int64

	mu           sync.Mutex
	fails        uint32
	ejections    int
	ejectedUntil time.Time
}

// lbState is a cluster version's smooth weighted round robin (nginx's).
type lbState struct {
	mu  sync.Mutex
	cur []int64
}

// pick chooses an endpoint: smooth weighted round robin (or random, or
// the less loaded of two) over the healthy hosts that are not ejected;
// the degraded ones only when no healthy one is left.
func (c *clusterRT) pick(now time.Time) *host {
	cands := make([]int, 0, len(c.hosts))
	for _, want := range []bool{true, false} {
		for i, h := range c.hosts {
			if h.healthy == want && !h.st.ejected(now) {
				cands = append(cands, i)
			}
		}
		if len(cands) > 0 {
			break
		}
	}
	if len(cands) == 0 {
		return nil
	}
	switch c.spec.lb {
	case cluster.Cluster_RANDOM:
		return c.hosts[cands[rand.IntN(len(cands))]]
	case cluster.Cluster_LEAST_REQUEST:
		a, b := c.hosts[cands[rand.IntN(len(cands))]], c.hosts[cands[rand.IntN(len(cands))]]
		if b.st.active.Load() < a.st.active.Load() {
			return b
		}
		return a
	}
	c.lb.mu.Lock()
	defer c.lb.mu.Unlock()
	var total int64
	best := -1
	for _, i := range cands {
		w := int64(c.hosts[i].weight)
		c.lb.cur[i] += w
		total += w
		if best < 0 || c.lb.cur[i] > c.lb.cur[best] {
			best = i
		}
	}
	c.lb.cur[best] -= total
	return c.hosts[best]
}

func (h *hostState) ejected(now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return now.Before(h.ejectedUntil)
}

// result records a connect attempt for outlier detection: consecutive
// failures eject the host for base_ejection_time times its ejections,
// unless max_ejection_percent of the cluster is out already.
func (c *clusterRT) result(h *host, ok bool, now time.Time) {
	od := c.spec.outlier
	h.st.mu.Lock()
	if ok {
		h.st.fails = 0
		h.st.mu.Unlock()
		return
	}
	h.st.fails++
	trip := od != nil && od.consecutive > 0 && h.st.fails >= od.consecutive
	h.st.mu.Unlock()
	if !trip {
		return
	}
	out := 0
	for _, o := range c.hosts {
		if o != h && o.st.ejected(now) {
			out++
		}
	}
	if (out+1)*100 > int(od.maxEjectedPct)*len(c.hosts) {
		return
	}
	h.st.mu.Lock()
	h.st.ejections++
	h.st.fails = 0
	h.st.ejectedUntil = now.Add(od.baseEjection * time.Duration(h.st.ejections))
	h.st.mu.Unlock()
}

// ---- The contract between the L7 data path (http*.go) and the traffic
// policy (this file). The bodies below are the L4 behaviour; the policy
// work extends them without changing the signatures.

// lbContext is what a load balancer may use from a request or connection.
type lbContext struct {
	// hash is the request's hash key (route hash_policy: header, cookie,
	// query parameter or source IP) for ring hash and maglev; hasHash is
	// false when no hash policy produced a key (then a random one is used).
	hash    uint64
	hasHash bool
	// tried are the endpoints an earlier attempt of this request used; a
	// retry prefers another one.
	tried []*host
}

// choose picks an endpoint for one connection or request attempt (nil:
// none is available).
func (c *clusterRT) choose(now time.Time, lc lbContext) *host {
	return c.pick(now)
}

// outcome is what one attempt against an endpoint came to, for outlier
// detection.
type outcome int

const (
	outcomeSuccess        outcome = iota
	outcomeConnectFailure         // no connection: refused, timeout, TLS failure, reset before the response
	outcome5xx                    // the endpoint answered 5xx (code says which; 502/503/504 are gateway errors)
)

// record feeds one attempt's outcome to outlier detection.
func (c *clusterRT) record(h *host, o outcome, code int, now time.Time) {
	c.result(h, o == outcomeSuccess, now)
}

// breaker names a circuit breaker threshold of a cluster.
type breaker int

const (
	breakerConnections breaker = iota // max_connections: open upstream connections
	breakerPending                    // max_pending_requests: requests waiting for a connection
	breakerRequests                   // max_requests: requests in flight
	breakerRetries                    // max_retries, or the retry budget: retries in flight
)

// admit takes a slot of breaker b; ok is false when the breaker is open
// (the caller fails fast: a TCP reset, or a 503 with
// x-envoy-overloaded). release must be called exactly once when ok.
func (c *clusterRT) admit(b breaker) (release func(), ok bool) {
	if b != breakerConnections {
		return func() {}, true
	}
	if n := c.st.active.Add(1); n > int64(c.spec.maxConns) {
		c.st.active.Add(-1)
		return nil, false
	}
	return func() { c.st.active.Add(-1) }, true
}
