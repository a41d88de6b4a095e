package proxy

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

// Traffic policy of a cluster: how an endpoint is picked, the circuit
// breakers, and outlier detection, as Envoy does them (docs/proxy.md,
// "Traffic policy", says where this differs).
//
// What a cluster version is built with (its hosts, the smooth round
// robin's weights, the hash rings and maglev tables) lives in clusterRT
// and is replaced with the version. What must outlive a version lives in
// clusterState (per cluster name: what is in flight, for the breakers)
// and hostState (per endpoint address of the cluster: active requests,
// consecutive failures, ejections), so an endpoints update neither resets
// a breaker nor forgives an ejected host.
//
// Nothing here runs on a timer: ejections end, and Envoy's interval sweeps
// happen, lazily, when a pick or a result looks at the host with its now.

// Envoy's defaults.
const (
	defaultMaxPendingRequests = 1024
	defaultMaxRequests        = 1024
	defaultMaxRetries         = 3
	defaultRetryBudgetPercent = 20.0
	defaultMinRetryConcurr    = 3
	defaultPanicThreshold     = 50.0
	defaultRingMin            = 1024
	defaultRingMax            = 8 * 1024 * 1024
	defaultMaglevSize         = 65537
	maxMaglevSize             = 5000011
	defaultChoiceCount        = 2
	// overprovisioning is Envoy's default overprovisioning factor (1.4,
	// as a percentage), which scales the available share of hosts before
	// it is compared with the panic threshold.
	overprovisioning = 140
)

// clockBase anchors the times kept in atomics: nanoseconds since it, on
// the monotonic clock when now carries one (time.Now does), so a wall
// clock step neither ends nor prolongs an ejection.
var clockBase = time.Now()

func monoNanos(t time.Time) int64 { return int64(t.Sub(clockBase)) }

// clusterState outlives snapshots: what a new version of the cluster
// keeps.
type clusterState struct {
	// In flight, for the circuit breakers.
	conns, pending, requests, retries atomic.Int64
	// ejecting serializes ejections, so two hosts tripping at once cannot
	// both pass the max_ejection_percent check.
	ejecting sync.Mutex
	stats    clusterStats // stats.go
}

// hostState outlives snapshots too, keyed by address within its cluster:
// outlier ejection and the active count survive an endpoints update.
type hostState struct {
	// active counts the connections or requests in flight on the host
	// (least request).
	active atomic.Int64
	// ejectedUntil is when the host's current or last ejection ends (on
	// monoNanos' clock); 0: never ejected.
	ejectedUntil atomic.Int64

	mu sync.Mutex
	// Consecutive 5xx, gateway errors (502, 503, 504) and, when split,
	// local-origin (connect) failures.
	c5xx, cGateway, cLocal uint32
	backoff                uint32 // Envoy's ejection time multiplier
	// returned is set once the host is seen back after an ejection
	// (its counters are then reset, as Envoy does on un-ejecting).
	returned bool

	stats hostStats // stats.go
}

func (s *hostState) ejected(now int64) bool {
	u := s.ejectedUntil.Load()
	return u != 0 && now < u
}

// settle accounts for an ejection that has ended (s.mu held).
func (s *hostState) settle(now int64) {
	if s.returned || s.ejectedUntil.Load() == 0 || s.ejected(now) {
		return
	}
	s.returned = true
	s.c5xx, s.cGateway, s.cLocal = 0, 0, 0
}

// lbState is what a cluster version's load balancer is built with.
type lbState struct {
	mu  sync.Mutex
	cur []int64 // smooth weighted round robin (nginx's), per host

	// Ring hash and maglev, per tier (healthy, degraded, all for panic),
	// built once per version: ring entries and table slots name hosts by
	// their index in clusterRT.hosts.
	rings  [numTiers][]ringEntry
	tables [numTiers][]int32
}

type ringEntry struct {
	hash uint64
	host int32
}

// tier is the set of hosts a pick draws from: the healthy ones, the
// degraded ones when no healthy one is left, or, in panic, all.
type tier int

const (
	tierHealthy tier = iota
	tierDegraded
	tierAll
	numTiers
)

// buildLB prepares a cluster version's balancer.
func (c *clusterRT) buildLB() {
	c.lb = &lbState{cur: make([]int64, len(c.hosts))}
	if c.spec.lb != cluster.Cluster_RING_HASH && c.spec.lb != cluster.Cluster_MAGLEV {
		return
	}
	var members [numTiers][]int32
	for i, h := range c.hosts {
		t := tierDegraded
		if h.healthy {
			t = tierHealthy
		}
		members[t] = append(members[t], int32(i))
		members[tierAll] = append(members[tierAll], int32(i))
	}
	for t := range numTiers {
		m := members[t]
		if len(m) == 0 {
			continue
		}
		// The panic tier is one of the others when those are one.
		if t == tierAll && (len(members[tierHealthy]) == 0 || len(members[tierDegraded]) == 0) {
			c.lb.rings[t] = c.lb.rings[tierHealthy]
			c.lb.tables[t] = c.lb.tables[tierHealthy]
			if len(members[tierHealthy]) == 0 {
				c.lb.rings[t] = c.lb.rings[tierDegraded]
				c.lb.tables[t] = c.lb.tables[tierDegraded]
			}
			continue
		}
		if c.spec.lb == cluster.Cluster_RING_HASH {
			c.lb.rings[t] = buildRing(c.hosts, m, c.spec.ringMin, c.spec.ringMax)
		} else {
			c.lb.tables[t] = buildMaglev(c.hosts, m, c.spec.maglevSize)
		}
	}
}

// buildRing is Envoy's ketama ring: each host gets a number of entries in
// proportion to its weight, scaled so the lightest gets a whole number
// of them and the ring is at least minSize (at most maxSize) long; the
// entries of a host are the xxHash64 of "<address>_<i>".
func buildRing(hosts []*host, members []int32, minSize, maxSize uint64) []ringEntry {
	var total, lightest float64
	for _, i := range members {
		w := float64(hosts[i].weight)
		total += w
		if lightest == 0 || w < lightest {
			lightest = w
		}
	}
	minNorm := lightest / total
	scale := math.Min(math.Ceil(minNorm*float64(minSize))/minNorm, float64(maxSize))
	ring := make([]ringEntry, 0, int(math.Ceil(scale)))
	var current, target float64
	for _, i := range members {
		key := hosts[i].addr.String() + "_"
		target += scale * float64(hosts[i].weight) / total
		for n := 0; current < target; n++ {
			ring = append(ring, ringEntry{hash: xxhash.Sum64String(key + strconv.Itoa(n)), host: i})
			current++
		}
	}
	sort.Slice(ring, func(a, b int) bool { return ring[a].hash < ring[b].hash })
	return ring
}

// buildMaglev is Envoy's maglev table (Eisenbud et al., listing 1, with
// weights): hosts in the order of their address, each with an offset
// (xxHash64 of the address) and a skip (xxHash64 with seed 1) into a
// table of prime size, take turns claiming their next free slot; a host
// of half the largest weight takes every other turn.
func buildMaglev(hosts []*host, members []int32, size uint64) []int32 {
	type entry struct {
		key                string
		host               int32
		offset, skip, next uint64
		weight, target     float64
	}
	entries := make([]entry, len(members))
	var total, heaviest float64
	for j, i := range members {
		key := hosts[i].addr.String()
		seeded := xxhash.NewWithSeed(1)
		seeded.WriteString(key)
		entries[j] = entry{
			key:    key,
			host:   i,
			offset: xxhash.Sum64String(key) % size,
			skip:   seeded.Sum64()%(size-1) + 1,
			weight: float64(hosts[i].weight),
		}
		total += entries[j].weight
	}
	for j := range entries {
		entries[j].weight /= total
		heaviest = max(heaviest, entries[j].weight)
	}
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.key, b.key) })
	table := make([]int32, size)
	for k := range table {
		table[k] = -1
	}
	var filled uint64
	for iteration := 1.0; filled < size; iteration++ {
		for j := range entries {
			if filled == size {
				break
			}
			e := &entries[j]
			if iteration*e.weight < e.target {
				continue
			}
			e.target += heaviest
			slot := (e.offset + e.skip*e.next) % size
			for table[slot] >= 0 {
				e.next++
				slot = (e.offset + e.skip*e.next) % size
			}
			table[slot] = e.host
			e.next++
			filled++
		}
	}
	return table
}

// eligible marks the hosts a pick may use: not ejected, healthy ones
// first, degraded ones only when no healthy one is left; all of them
// when too few are available (Envoy's panic: 1.4 × the available share
// below healthy_panic_threshold). Among those, the ones not in tried when
// there is any. It returns nil when no host may be used.
func (c *clusterRT) eligible(now int64, tried []*host) ([]bool, tier) {
	n := len(c.hosts)
	out := make([]bool, n)
	var healthy, degraded int
	for i, h := range c.hosts {
		if h.st.ejected(now) {
			continue
		}
		out[i] = true
		if h.healthy {
			healthy++
		} else {
			degraded++
		}
	}
	t := tierHealthy
	switch {
	case float64(overprovisioning*(healthy+degraded)) < c.spec.panicThreshold*float64(n):
		t = tierAll
		for i := range out {
			out[i] = true
		}
	case healthy > 0:
		for i, h := range c.hosts {
			out[i] = out[i] && h.healthy
		}
	case degraded > 0:
		t = tierDegraded
	default:
		return nil, t
	}
	if len(tried) > 0 {
		fresh := false
		for i, h := range c.hosts {
			if out[i] && !isTried(h, tried) {
				fresh = true
				break
			}
		}
		if fresh {
			for i, h := range c.hosts {
				out[i] = out[i] && !isTried(h, tried)
			}
		}
	}
	return out, t
}

// isTried compares by address: an earlier attempt may have used the same
// endpoint from an earlier version of the cluster.
func isTried(h *host, tried []*host) bool {
	for _, t := range tried {
		if t != nil && t.addr == h.addr {
			return true
		}
	}
	return false
}

func (c *clusterRT) pickRoundRobin(use []bool) int {
	c.lb.mu.Lock()
	defer c.lb.mu.Unlock()
	var total int64
	best := -1
	for i, ok := range use {
		if !ok {
			continue
		}
		w := int64(c.hosts[i].weight)
		c.lb.cur[i] += w
		total += w
		if best < 0 || c.lb.cur[i] > c.lb.cur[best] {
			best = i
		}
	}
	c.lb.cur[best] -= total
	return best
}

// pickWeighted draws one host of use with a probability in proportion to
// its weight.
func (c *clusterRT) pickWeighted(use []bool) int {
	var total uint64
	for i, ok := range use {
		if ok {
			total += uint64(c.hosts[i].weight)
		}
	}
	r := rand.Uint64N(total)
	last := -1
	for i, ok := range use {
		if !ok {
			continue
		}
		last = i
		if w := uint64(c.hosts[i].weight); r < w {
			return i
		} else {
			r -= w
		}
	}
	return last
}

// pickLeast is least request as Envoy does it with equal weights: the
// least loaded of choice_count hosts drawn at random, here drawn by
// weight, so weights steer the draw and load the choice.
func (c *clusterRT) pickLeast(use []bool) int {
	best := c.pickWeighted(use)
	for range max(c.spec.choiceCount, 1) - 1 {
		i := c.pickWeighted(use)
		if c.hosts[i].st.active.Load() < c.hosts[best].st.active.Load() {
			best = i
		}
	}
	return best
}

// pickHash looks key up in the ring or table of tier t; a host it may not
// use is skipped as if it were not there: on the ring, the next entry's
// host takes the key (what Envoy's ring rebuilt without the host would
// do); in a maglev table, the key is mutated as Envoy does for a retry,
// then the table walked.
func (c *clusterRT) pickHash(use []bool, t tier, key uint64) int {
	if ring := c.lb.rings[t]; len(ring) > 0 {
		start := sort.Search(len(ring), func(j int) bool { return ring[j].hash >= key })
		for k := range ring {
			if e := ring[(start+k)%len(ring)]; use[e.host] {
				return int(e.host)
			}
		}
	}
	if table := c.lb.tables[t]; len(table) > 0 {
		size := uint64(len(table))
		for attempt := range uint64(64) {
			h := key
			if attempt > 0 {
				h ^= ^uint64(0) - attempt + 1
			}
			if i := table[h%size]; use[i] {
				return int(i)
			}
		}
		start := key % size
		for k := range size {
			if i := table[(start+k)%size]; use[i] {
				return int(i)
			}
		}
	}
	// A host left off a ring capped by maximum_ring_size, or a table
	// smaller than the hosts.
	return c.pickWeighted(use)
}

// ---- The contract between the L7 data path (http*.go) and the traffic
// policy (this file).

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
// none is available). The caller counts the attempt in h.st.active while
// it is in flight (least request reads it).
func (c *clusterRT) choose(now time.Time, lc lbContext) *host {
	if len(c.hosts) == 0 {
		return nil
	}
	use, t := c.eligible(monoNanos(now), lc.tried)
	if use == nil {
		return nil
	}
	var i int
	switch c.spec.lb {
	case cluster.Cluster_RANDOM:
		i = c.pickWeighted(use)
	case cluster.Cluster_LEAST_REQUEST:
		i = c.pickLeast(use)
	case cluster.Cluster_RING_HASH, cluster.Cluster_MAGLEV:
		key := lc.hash
		if !lc.hasHash {
			key = rand.Uint64()
		}
		i = c.pickHash(use, t, key)
	default:
		i = c.pickRoundRobin(use)
	}
	return c.hosts[i]
}

// outcome is what one attempt against an endpoint came to, for outlier
// detection.
type outcome int

const (
	// outcomeSuccess: the attempt's final result was good — a TCP
	// connection established (code 0), or a response that is not a 5xx
	// (code: its status). It resets the host's consecutive counters.
	outcomeSuccess outcome = iota
	// outcomeConnectFailure: no connection: refused, timeout, TLS
	// failure, reset before the response. Unless the cluster splits
	// local-origin errors, it counts as a 503 (code, if a 5xx, instead:
	// 504 for a timeout).
	outcomeConnectFailure
	// outcome5xx: the endpoint answered 5xx (code says which; 502/503/504
	// are gateway errors).
	outcome5xx
)

// record feeds one attempt's outcome to outlier detection.
func (c *clusterRT) record(h *host, o outcome, code int, now time.Time) {
	c.countOutcome(h, o)
	od := c.spec.outlier
	if od == nil || h == nil {
		return
	}
	t := monoNanos(now)
	h.st.mu.Lock()
	h.st.settle(t)
	trips := h.st.count(o, code, od)
	h.st.mu.Unlock()
	for _, k := range trips {
		if h.st.ejected(t) {
			// Ejected already (by the other counter, or concurrently):
			// Envoy neither ejects again nor resets the counter.
			return
		}
		c.eject(h, k, t)
		h.st.mu.Lock()
		switch k {
		case trip5xx:
			h.st.c5xx = 0
		case tripGateway:
			h.st.cGateway = 0
		case tripLocal:
			h.st.cLocal = 0
		}
		h.st.mu.Unlock()
	}
}

// tripKind is the consecutive counter that reached its threshold.
type tripKind int

const (
	tripGateway tripKind = iota
	trip5xx
	tripLocal
)

// count applies one outcome to the counters (s.mu held) and returns the
// ones that reached their threshold just now, as Envoy's host monitor
// does (with or without split_external_local_origin_errors).
func (s *hostState) count(o outcome, code int, od *outlierSpec) []tripKind {
	switch o {
	case outcomeConnectFailure:
		if od.split {
			s.cLocal++
			if s.cLocal == od.consecLocal {
				return []tripKind{tripLocal}
			}
			return nil
		}
		if code < 500 || code > 599 {
			code = 503
		}
	case outcome5xx:
		if od.split {
			s.cLocal = 0 // the connection itself was fine
		}
		if code < 500 || code > 599 {
			code = 500
		}
	default:
		if od.split {
			s.cLocal = 0
			if code == 0 {
				return nil // TCP: nothing above the connection to count
			}
		}
		if code == 0 {
			code = 200
		}
	}
	if code < 500 || code > 599 {
		s.c5xx, s.cGateway = 0, 0
		return nil
	}
	var trips []tripKind
	if code == 502 || code == 503 || code == 504 {
		s.cGateway++
		if s.cGateway == od.consecGateway {
			trips = append(trips, tripGateway)
		}
	} else {
		s.cGateway = 0
	}
	s.c5xx++
	if s.c5xx == od.consec5xx {
		trips = append(trips, trip5xx)
	}
	return trips
}

// eject takes h out of rotation, as Envoy's detector does: only if the
// enforcing_* percentage for what tripped says so, and only while no more
// than max_ejection_percent of the cluster's hosts would be out (one host
// always may be, unless always_eject_one_host is false). The ejection
// lasts base_ejection_time times a multiplier that grows with each
// ejection and shrinks by one for each interval the host then stays in,
// capped at max_ejection_time, plus jitter; it ends on an interval tick.
func (c *clusterRT) eject(h *host, k tripKind, now int64) {
	od := c.spec.outlier
	enforcing := od.enforce5xx
	switch k {
	case tripGateway:
		enforcing = od.enforceGateway
	case tripLocal:
		enforcing = od.enforceLocal
	}
	c.st.ejecting.Lock()
	defer c.st.ejecting.Unlock()
	out := 0
	for _, o := range c.hosts {
		if o.st.ejected(now) {
			out++
		}
	}
	allowed := (out+1)*100 <= int(od.maxEjectedPct)*len(c.hosts) || (od.alwaysEjectOne && out == 0)
	if !allowed || rand.Uint32N(100) >= enforcing {
		return
	}
	s := h.st
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ejected(now) {
		return
	}
	iv := int64(od.interval)
	if last := s.ejectedUntil.Load(); last != 0 {
		// Envoy's sweep lowers the multiplier once per interval the host
		// spent back in rotation.
		if ticks := (now - last) / iv; ticks > 0 {
			s.backoff -= uint32(min(ticks, int64(s.backoff)))
		}
	}
	base, maxT := int64(od.baseEjection), int64(od.maxEjection)
	if int64(s.backoff)*base < maxT+base {
		s.backoff++
	}
	d := min(base*int64(s.backoff), maxT)
	if od.jitter > 0 {
		d += rand.Int64N(int64(od.jitter) + 1)
	}
	// Envoy returns a host on the first sweep after its time is up; the
	// sweeps here fall on multiples of interval.
	end := now + d
	if r := end % iv; r != 0 {
		end += iv - r
		if r < 0 {
			end -= iv
		}
	}
	s.ejectedUntil.Store(end)
	s.returned = false
	s.stats.ejections.Add(1)
	c.st.stats.ejections.Add(1)
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
// x-envoy-overloaded). release must be called once when ok; calling it
// again does nothing. The counts live in clusterState, so they span the
// cluster's versions; the limits are the current version's.
func (c *clusterRT) admit(b breaker) (release func(), ok bool) {
	n, ok := c.take(b)
	if !ok {
		return nil, false
	}
	var done atomic.Bool
	return func() {
		if done.CompareAndSwap(false, true) {
			n.Add(-1)
		}
	}, true
}

// take is admit for a caller that releases the slot itself: it
// decrements the count returned, once.
func (c *clusterRT) take(b breaker) (*atomic.Int64, bool) {
	bs := &c.spec.breakers
	var n *atomic.Int64
	var limit int64
	switch b {
	case breakerConnections:
		n, limit = &c.st.conns, int64(bs.maxConns)
	case breakerPending:
		n, limit = &c.st.pending, int64(bs.maxPending)
	case breakerRequests:
		n, limit = &c.st.requests, int64(bs.maxRequests)
	case breakerRetries:
		n, limit = &c.st.retries, int64(bs.maxRetries)
		if rb := bs.budget; rb != nil {
			limit = rb.limit(c.st.requests.Load() + c.st.pending.Load())
		}
	default:
		return nil, false
	}
	if n.Add(1) > limit {
		n.Add(-1)
		c.st.stats.overflow[b].Add(1)
		return nil, false
	}
	return n, true
}

// limit is the retries a budget allows with active requests (in flight
// and pending) in the cluster: budget_percent of them, at least
// min_retry_concurrency.
func (rb *retryBudget) limit(active int64) int64 {
	return max(int64(rb.minConcurrency), int64(rb.percent/100*float64(active)))
}
