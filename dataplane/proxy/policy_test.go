package proxy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Traffic policy through its contract (choose, record, admit), on clusters
// parsed from xDS and built as the proxy builds them.

var allPolicies = []cluster.Cluster_LbPolicy{cluster.Cluster_ROUND_ROBIN, cluster.Cluster_LEAST_REQUEST,
	cluster.Cluster_RANDOM, cluster.Cluster_RING_HASH, cluster.Cluster_MAGLEV}

// tep is a test endpoint: 10.0.0.<n>:8080 with a weight and health.
type tep struct {
	n      int
	weight uint32
	health core.HealthStatus
}

func tepAddr(n int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(n / 256), byte(n % 256)}), 8080)
}

// policyCluster is a STATIC cluster named c of the endpoints eps.
func policyCluster(lb cluster.Cluster_LbPolicy, eps ...tep) *cluster.Cluster {
	var lbs []*endpoint.LbEndpoint
	for _, e := range eps {
		a := tepAddr(e.n)
		le := &endpoint.LbEndpoint{
			HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{Address: &core.Address{
				Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
					Address: a.Addr().String(), PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(a.Port())}}}}}},
			HealthStatus: e.health,
		}
		if e.weight > 0 {
			le.LoadBalancingWeight = wrapperspb.UInt32(e.weight)
		}
		lbs = append(lbs, le)
	}
	return &cluster.Cluster{
		Name: "c", ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC}, LbPolicy: lb,
		LoadAssignment: &endpoint.ClusterLoadAssignment{ClusterName: "c", Endpoints: []*endpoint.LocalityLbEndpoints{{LbEndpoints: lbs}}},
	}
}

func equalEps(n int) []tep {
	out := make([]tep, n)
	for i := range out {
		out[i] = tep{n: i + 1}
	}
	return out
}

// buildRT parses and builds c; prev is the cluster's previous version.
func buildRT(t testing.TB, c *cluster.Cluster, prev *clusterRT) *clusterRT {
	t.Helper()
	cs, err := parseCluster(c)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := buildCluster(cs, &state{}, prev)
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

// counts picks n times with keys from r (nil: no hash key).
func countPicks(t *testing.T, c *clusterRT, n int, r *rand.Rand) map[netip.AddrPort]int {
	t.Helper()
	now := time.Now()
	got := map[netip.AddrPort]int{}
	for range n {
		lc := lbContext{}
		if r != nil {
			lc = lbContext{hash: r.Uint64(), hasHash: true}
		}
		h := c.choose(now, lc)
		if h == nil {
			t.Fatal("no host chosen")
		}
		got[h.addr]++
	}
	return got
}

// within fails unless got is within tol (a fraction) of want.
func within(t *testing.T, what string, got, want, tol float64) {
	t.Helper()
	if got < want*(1-tol) || got > want*(1+tol) {
		t.Errorf("%s: %.0f, want %.0f ±%.0f%%", what, got, want, tol*100)
	}
}

// TestBalancersSpread: every policy spreads 3 equal hosts about evenly,
// and honours weights 1:2:3.
func TestBalancersSpread(t *testing.T) {
	for _, lb := range allPolicies {
		t.Run(lb.String(), func(t *testing.T) {
			var r *rand.Rand
			tol := 0.10
			if lb == cluster.Cluster_RING_HASH || lb == cluster.Cluster_MAGLEV {
				r = rand.New(rand.NewPCG(1, 2))
				// A ring's arcs are not all one length: its shares are
				// close to, not exactly, the weights.
				tol = 0.2
			}
			const n = 30000
			eq := buildRT(t, policyCluster(lb, equalEps(3)...), nil)
			for a, k := range countPicks(t, eq, n, r) {
				within(t, fmt.Sprintf("equal hosts: picks of %s", a), float64(k), n/3, tol)
			}
			if lb == cluster.Cluster_ROUND_ROBIN {
				if got := countPicks(t, eq, 3000, nil); got[tepAddr(1)] != 1000 || got[tepAddr(2)] != 1000 || got[tepAddr(3)] != 1000 {
					t.Errorf("round robin over 3 equal hosts, 3000 picks: %v", got)
				}
			}
			w := buildRT(t, policyCluster(lb, tep{n: 1, weight: 1}, tep{n: 2, weight: 2}, tep{n: 3, weight: 3}), nil)
			got := countPicks(t, w, n, r)
			for i := 1; i <= 3; i++ {
				within(t, fmt.Sprintf("weight %d", i), float64(got[tepAddr(i)]), n*float64(i)/6, tol)
			}
		})
	}
}

// TestLeastRequest: least request prefers the less loaded host; with more
// choices, more so.
func TestLeastRequest(t *testing.T) {
	for _, tc := range []struct {
		choices uint32
		want    float64 // share of the idle host: 1 - (2/3)^choices
	}{{0, 1 - 4.0/9}, {4, 1 - 16.0/81}} {
		c := policyCluster(cluster.Cluster_LEAST_REQUEST, equalEps(3)...)
		if tc.choices > 0 {
			c.LbConfig = &cluster.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &cluster.Cluster_LeastRequestLbConfig{
				ChoiceCount: wrapperspb.UInt32(tc.choices)}}
		}
		rt := buildRT(t, c, nil)
		rt.hosts[0].st.active.Store(10)
		rt.hosts[1].st.active.Store(10)
		const n = 20000
		got := countPicks(t, rt, n, nil)
		within(t, fmt.Sprintf("choice_count %d: picks of the idle host", tc.choices), float64(got[tepAddr(3)]), n*tc.want, 0.06)
	}
}

// TestConsistentHashing: a key keeps its host; removing one of 10 hosts
// moves few keys: with maglev about a tenth; with Envoy's ring about a
// fifth (the removed host's tenth, and a tenth more because the ring is
// rescaled to keep its minimum size); ejecting a host moves its keys and
// no other.
func TestConsistentHashing(t *testing.T) {
	for _, lb := range []cluster.Cluster_LbPolicy{cluster.Cluster_RING_HASH, cluster.Cluster_MAGLEV} {
		t.Run(lb.String(), func(t *testing.T) {
			full := buildRT(t, policyCluster(lb, equalEps(10)...), nil)
			fewer := buildRT(t, policyCluster(lb, equalEps(10)[1:]...), nil)
			r := rand.New(rand.NewPCG(3, 4))
			now := time.Now()
			const n = 20000
			moved, onRemoved, movedOnEject := 0, 0, 0
			for range n {
				k := r.Uint64()
				a := full.choose(now, lbContext{hash: k, hasHash: true})
				if again := full.choose(now, lbContext{hash: k, hasHash: true}); again != a {
					t.Fatalf("key %d: %s then %s", k, a.addr, again.addr)
				}
				b := fewer.choose(now, lbContext{hash: k, hasHash: true})
				if a.addr == tepAddr(1) {
					onRemoved++
				}
				if a.addr != b.addr {
					moved++
				}
				ejectNow(full.hosts[0], now, time.Minute)
				e := full.choose(now, lbContext{hash: k, hasHash: true})
				full.hosts[0].st.ejectedUntil.Store(0)
				if e.addr != a.addr {
					movedOnEject++
					if a.addr != tepAddr(1) {
						t.Fatalf("host 1 ejected: key %d moved from %s, which is not", k, a.addr)
					}
				}
			}
			bound := 0.13
			if lb == cluster.Cluster_RING_HASH {
				bound = 0.22
			}
			if moved < onRemoved || float64(moved) > n*bound {
				t.Errorf("%d of %d keys moved (%d were on the removed host); want at most %.0f%%", moved, n, onRemoved, bound*100)
			}
			if movedOnEject != onRemoved {
				t.Errorf("host 1 ejected: %d keys moved, want its %d", movedOnEject, onRemoved)
			}
		})
	}
}

// TestRingSizes: minimum_ring_size and maximum_ring_size bound the ring;
// weights scale a host's entries.
func TestRingSizes(t *testing.T) {
	c := policyCluster(cluster.Cluster_RING_HASH, tep{n: 1, weight: 1}, tep{n: 2, weight: 3})
	c.LbConfig = &cluster.Cluster_RingHashLbConfig_{RingHashLbConfig: &cluster.Cluster_RingHashLbConfig{
		MinimumRingSize: wrapperspb.UInt64(100), MaximumRingSize: wrapperspb.UInt64(1000)}}
	rt := buildRT(t, c, nil)
	ring := rt.lb.rings[tierHealthy]
	per := map[int32]int{}
	for _, e := range ring {
		per[e.host]++
	}
	// The lightest host gets ceil(1/4 × 100) = 25 entries, the other 75.
	if len(ring) != 100 || per[0] != 25 || per[1] != 75 {
		t.Errorf("ring of %d entries, per host %v; want 100, 25 and 75", len(ring), per)
	}
	// 1:1000 would need 1001 entries for the light host to get one.
	c = policyCluster(cluster.Cluster_RING_HASH, tep{n: 1, weight: 1}, tep{n: 2, weight: 1000})
	c.LbConfig = &cluster.Cluster_RingHashLbConfig_{RingHashLbConfig: &cluster.Cluster_RingHashLbConfig{
		MinimumRingSize: wrapperspb.UInt64(100), MaximumRingSize: wrapperspb.UInt64(500)}}
	if ring := buildRT(t, c, nil).lb.rings[tierHealthy]; len(ring) != 500 {
		t.Errorf("ring capped at 500 has %d entries", len(ring))
	}
}

// TestMaglevTable: the table has the configured prime size and shares its
// slots by weight.
func TestMaglevTable(t *testing.T) {
	c := policyCluster(cluster.Cluster_MAGLEV, tep{n: 1, weight: 1}, tep{n: 2, weight: 3})
	c.LbConfig = &cluster.Cluster_MaglevLbConfig_{MaglevLbConfig: &cluster.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(1009)}}
	table := buildRT(t, c, nil).lb.tables[tierHealthy]
	per := map[int32]int{}
	for _, i := range table {
		per[i]++
	}
	if len(table) != 1009 || per[0]+per[1] != 1009 {
		t.Fatalf("table of %d slots, per host %v", len(table), per)
	}
	within(t, "slots of the weight-3 host", float64(per[1]), 1009*0.75, 0.02)
}

func ejectNow(h *host, now time.Time, d time.Duration) {
	h.st.ejectedUntil.Store(monoNanos(now.Add(d)))
}

// TestChooseSkips: no policy picks an ejected host, nor a degraded one
// while a healthy one is left; the degraded ones are used once no healthy
// one is (panic threshold 0 here, so panic does not hide it).
func TestChooseSkips(t *testing.T) {
	for _, lb := range allPolicies {
		t.Run(lb.String(), func(t *testing.T) {
			c := policyCluster(lb, tep{n: 1}, tep{n: 2}, tep{n: 3}, tep{n: 4, health: core.HealthStatus_DEGRADED},
				tep{n: 5, health: core.HealthStatus_UNHEALTHY})
			c.CommonLbConfig = &cluster.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 0}}
			rt := buildRT(t, c, nil)
			if len(rt.hosts) != 4 {
				t.Fatalf("%d hosts; an unhealthy endpoint must not be one", len(rt.hosts))
			}
			now := time.Now()
			ejectNow(rt.hosts[0], now, time.Minute)
			r := rand.New(rand.NewPCG(5, 6))
			got := countPicks(t, rt, 2000, r)
			if got[tepAddr(1)] > 0 || got[tepAddr(4)] > 0 || got[tepAddr(2)] == 0 || got[tepAddr(3)] == 0 {
				t.Errorf("host 1 ejected, 4 degraded: picks %v", got)
			}
			ejectNow(rt.hosts[1], now, time.Minute)
			ejectNow(rt.hosts[2], now, time.Minute)
			if got := countPicks(t, rt, 200, r); got[tepAddr(4)] != 200 {
				t.Errorf("all healthy hosts ejected: picks %v, want the degraded one only", got)
			}
			ejectNow(rt.hosts[3], now, time.Minute)
			if h := rt.choose(now, lbContext{}); h != nil {
				t.Errorf("every host ejected, no panic: picked %s", h.addr)
			}
		})
	}
}

// TestPanicThreshold: with the default 50%, once 1.4 × the available share
// of hosts falls below it (1 of 3 left), every host is used again.
func TestPanicThreshold(t *testing.T) {
	for _, lb := range allPolicies {
		t.Run(lb.String(), func(t *testing.T) {
			rt := buildRT(t, policyCluster(lb, equalEps(3)...), nil)
			now := time.Now()
			r := rand.New(rand.NewPCG(7, 8))
			ejectNow(rt.hosts[0], now, time.Minute)
			if got := countPicks(t, rt, 600, r); got[tepAddr(1)] > 0 {
				t.Errorf("1 of 3 ejected (93%% available after overprovisioning): picks %v", got)
			}
			ejectNow(rt.hosts[1], now, time.Minute)
			if got := countPicks(t, rt, 600, r); got[tepAddr(1)] == 0 || got[tepAddr(2)] == 0 || got[tepAddr(3)] == 0 {
				t.Errorf("2 of 3 ejected (47%% < 50%%): picks %v, want all hosts (panic)", got)
			}
		})
	}
}

// TestRetryAvoidsTried: a retry goes to a host the request has not tried
// while there is one, under every policy, even with the same hash key.
func TestRetryAvoidsTried(t *testing.T) {
	for _, lb := range allPolicies {
		t.Run(lb.String(), func(t *testing.T) {
			rt := buildRT(t, policyCluster(lb, equalEps(3)...), nil)
			now := time.Now()
			r := rand.New(rand.NewPCG(9, 10))
			for range 200 {
				lc := lbContext{hash: r.Uint64(), hasHash: true}
				first := rt.choose(now, lc)
				lc.tried = []*host{first}
				second := rt.choose(now, lc)
				if second == first {
					t.Fatalf("retry went back to %s", first.addr)
				}
				lc.tried = append(lc.tried, second)
				if third := rt.choose(now, lc); third == first || third == second {
					t.Fatalf("third attempt went back to %s", third.addr)
				}
				lc.tried = rt.hosts
				if h := rt.choose(now, lc); h == nil {
					t.Fatal("every host tried: a retry must still get one")
				}
			}
			// A host tried in an earlier version of the cluster counts.
			next := buildRT(t, policyCluster(lb, equalEps(2)...), rt)
			for range 50 {
				if h := next.choose(now, lbContext{tried: []*host{rt.hosts[0]}}); h.addr == rt.hosts[0].addr {
					t.Fatalf("retry went back to %s, tried in the previous version", h.addr)
				}
			}
		})
	}
}

// breakerCluster has every threshold at n (retry budget: none).
func breakerCluster(n uint32) *cluster.Cluster {
	c := policyCluster(cluster.Cluster_ROUND_ROBIN, equalEps(1)...)
	c.CircuitBreakers = &cluster.CircuitBreakers{Thresholds: []*cluster.CircuitBreakers_Thresholds{{
		MaxConnections: wrapperspb.UInt32(n), MaxPendingRequests: wrapperspb.UInt32(n),
		MaxRequests: wrapperspb.UInt32(n), MaxRetries: wrapperspb.UInt32(n),
	}}}
	return c
}

// TestBreakersConcurrent: under concurrency, no breaker lets more than its
// threshold through at once, each opens when full and closes again as
// slots are released, and a second release is harmless.
func TestBreakersConcurrent(t *testing.T) {
	const limit = 5
	rt := buildRT(t, breakerCluster(limit), nil)
	for _, b := range []breaker{breakerConnections, breakerPending, breakerRequests, breakerRetries} {
		var inside, peak, admitted, refused atomic.Int64
		var wg sync.WaitGroup
		for range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 200 {
					release, ok := rt.admit(b)
					if !ok {
						refused.Add(1)
						continue
					}
					admitted.Add(1)
					n := inside.Add(1)
					for {
						p := peak.Load()
						if n <= p || peak.CompareAndSwap(p, n) {
							break
						}
					}
					inside.Add(-1)
					release()
					release()
				}
			}()
		}
		wg.Wait()
		if peak.Load() > limit || admitted.Load() == 0 {
			t.Errorf("breaker %d: %d admitted, peak %d in flight, limit %d", b, admitted.Load(), peak.Load(), limit)
		}
		var held []func()
		for range limit {
			release, ok := rt.admit(b)
			if !ok {
				t.Fatalf("breaker %d refused below its limit (a count leaked)", b)
			}
			held = append(held, release)
		}
		if _, ok := rt.admit(b); ok {
			t.Errorf("breaker %d: admitted past its limit of %d", b, limit)
		}
		held[0]()
		release, ok := rt.admit(b)
		if !ok {
			t.Errorf("breaker %d: still open after a release", b)
		}
		release()
		for _, r := range held {
			r()
		}
	}
	if rt.st.conns.Load()+rt.st.pending.Load()+rt.st.requests.Load()+rt.st.retries.Load() != 0 {
		t.Error("counts left after every slot was released")
	}
}

// TestRetryBudget: with retry_budget, retries in flight may be
// budget_percent of the active and pending requests, at least
// min_retry_concurrency; max_retries no longer applies.
func TestRetryBudget(t *testing.T) {
	for _, tc := range []struct {
		percent          float64 // 0: default 20
		minConc          uint32  // 0: default 3
		requests, pendng int
		want             int
	}{
		{requests: 0, want: 3},
		{requests: 10, want: 3},
		{requests: 100, want: 20},
		{requests: 40, pendng: 10, want: 10},
		{percent: 50, minConc: 1, requests: 7, want: 3},
		{percent: 100, minConc: 1, requests: 0, want: 1},
		{percent: 10, minConc: 8, requests: 50, want: 8},
	} {
		c := breakerCluster(1000)
		rb := &cluster.CircuitBreakers_Thresholds_RetryBudget{}
		if tc.percent > 0 {
			rb.BudgetPercent = &typev3.Percent{Value: tc.percent}
		}
		if tc.minConc > 0 {
			rb.MinRetryConcurrency = wrapperspb.UInt32(tc.minConc)
		}
		c.CircuitBreakers.Thresholds[0].MaxRetries = wrapperspb.UInt32(0)
		c.CircuitBreakers.Thresholds[0].RetryBudget = rb
		rt := buildRT(t, c, nil)
		for range tc.requests {
			rt.admit(breakerRequests)
		}
		for range tc.pendng {
			rt.admit(breakerPending)
		}
		got := 0
		for {
			if _, ok := rt.admit(breakerRetries); !ok {
				break
			}
			got++
		}
		if got != tc.want {
			t.Errorf("budget %v%% min %d, %d requests + %d pending: %d retries admitted, want %d",
				tc.percent, tc.minConc, tc.requests, tc.pendng, got, tc.want)
		}
	}
}

// TestBreakerCountsSurviveRebuild: a new version of a cluster sees what the
// old one has in flight, and applies its own limits to it.
func TestBreakerCountsSurviveRebuild(t *testing.T) {
	v1 := buildRT(t, breakerCluster(10), nil)
	var held []func()
	for range 3 {
		release, ok := v1.admit(breakerConnections)
		if !ok {
			t.Fatal("refused below the limit")
		}
		held = append(held, release)
	}
	v2 := buildRT(t, breakerCluster(3), v1)
	if _, ok := v2.admit(breakerConnections); ok {
		t.Fatal("v2 (limit 3) admitted a 4th connection while v1 holds 3")
	}
	held[0]()
	release, ok := v2.admit(breakerConnections)
	if !ok {
		t.Fatal("v2 refused after v1 released one")
	}
	release()
}

// odCluster has n equal hosts and outlier detection od.
func odCluster(n int, od *cluster.OutlierDetection) *cluster.Cluster {
	c := policyCluster(cluster.Cluster_ROUND_ROBIN, equalEps(n)...)
	c.OutlierDetection = od
	return c
}

// meshODCluster is odCluster with always_eject_one_host, as the xDS server
// sends it: so one of a few hosts can be ejected.
func meshODCluster(n int, od *cluster.OutlierDetection) *cluster.Cluster {
	od.AlwaysEjectOneHost = wrapperspb.Bool(true)
	return odCluster(n, od)
}

func isOut(h *host, now time.Time) bool { return h.st.ejected(monoNanos(now)) }

func recordN(rt *clusterRT, h *host, n int, o outcome, code int, now time.Time) {
	for range n {
		rt.record(h, o, code, now)
	}
}

// TestOutlierConsecutive5xx: 5 consecutive 5xx eject a host (by default,
// even from a 3-host cluster at 10%); a success in between resets the
// count; an ejected host is not picked.
func TestOutlierConsecutive5xx(t *testing.T) {
	rt := buildRT(t, meshODCluster(3, &cluster.OutlierDetection{}), nil)
	h := rt.hosts[0]
	now := time.Now()
	recordN(rt, h, 4, outcome5xx, 500, now)
	rt.record(h, outcomeSuccess, 200, now)
	recordN(rt, h, 4, outcome5xx, 500, now)
	if isOut(h, now) {
		t.Fatal("ejected after 4 + 4 5xx with a success between")
	}
	rt.record(h, outcome5xx, 500, now)
	if !isOut(h, now) {
		t.Fatal("not ejected after 5 consecutive 5xx")
	}
	for range 30 {
		if rt.choose(now, lbContext{}) == h {
			t.Fatal("an ejected host was picked")
		}
	}
	// Envoy's default does not enforce gateway failures; 5xx it does.
	od := meshODCluster(3, &cluster.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(0),
		ConsecutiveGatewayFailure: wrapperspb.UInt32(3)})
	rt2 := buildRT(t, od, nil)
	g := rt2.hosts[1]
	recordN(rt2, g, 10, outcome5xx, 503, now)
	if isOut(g, now) {
		t.Error("ejected for gateway failures with enforcing_consecutive_gateway_failure at its default 0")
	}
	od.OutlierDetection.EnforcingConsecutiveGatewayFailure = wrapperspb.UInt32(100)
	rt3 := buildRT(t, od, nil)
	g = rt3.hosts[1]
	recordN(rt3, g, 2, outcome5xx, 502, now)
	rt3.record(g, outcome5xx, 500, now) // a 5xx, but not a gateway error: the gateway count restarts
	recordN(rt3, g, 2, outcome5xx, 504, now)
	if isOut(g, now) {
		t.Fatal("ejected after 2 + 2 gateway errors with a 500 between")
	}
	rt3.record(g, outcome5xx, 503, now)
	if !isOut(g, now) {
		t.Fatal("not ejected after 3 consecutive gateway errors")
	}
	// enforcing_consecutive_5xx 0: detected, never enforced.
	off := buildRT(t, meshODCluster(3, &cluster.OutlierDetection{EnforcingConsecutive_5Xx: wrapperspb.UInt32(0)}), nil)
	recordN(off, off.hosts[0], 20, outcome5xx, 500, now)
	if isOut(off.hosts[0], now) {
		t.Error("ejected with enforcing_consecutive_5xx 0")
	}
}

// TestOutlierEjectionTime: an ejection lasts base_ejection_time times the
// multiplier, ends on the first interval tick after that, and grows with
// each ejection up to max_ejection_time; time spent back in rotation
// lowers the multiplier again; a returned host starts counting afresh.
func TestOutlierEjectionTime(t *testing.T) {
	od := &cluster.OutlierDetection{Interval: durationpb.New(time.Second), BaseEjectionTime: durationpb.New(30 * time.Second),
		MaxEjectionTime: durationpb.New(75 * time.Second)}
	rt := buildRT(t, meshODCluster(3, od), nil)
	h := rt.hosts[0]
	now := time.Now()
	// ejectFor ejects h at now and returns how long it stays out, to the
	// second.
	ejectFor := func() time.Duration {
		t.Helper()
		recordN(rt, h, 5, outcome5xx, 500, now)
		if !isOut(h, now) {
			t.Fatal("not ejected")
		}
		for d := time.Second; d < 10*time.Minute; d += time.Second {
			if !isOut(h, now.Add(d)) {
				now = now.Add(d)
				return d
			}
		}
		t.Fatal("never returned")
		return 0
	}
	// Each ends on the tick after base × n (so within a second of it).
	// The multiplier grows while base × it < max + base (to 4 here), the
	// time is capped at max.
	for i, want := range []time.Duration{30 * time.Second, 60 * time.Second, 75 * time.Second, 75 * time.Second, 75 * time.Second} {
		if got := ejectFor(); got < want || got > want+time.Second {
			t.Errorf("ejection %d lasted %v, want %v (to the next tick)", i+1, got, want)
		}
	}
	// Back for 3 intervals: the multiplier drops from 4 to 1, and the
	// next ejection is twice the base.
	now = now.Add(3 * time.Second)
	if got := ejectFor(); got < 60*time.Second || got > 61*time.Second {
		t.Errorf("after 3 intervals back, the ejection lasted %v, want 60s", got)
	}
	// Back for longer than the multiplier: the base again.
	now = now.Add(time.Minute)
	if got := ejectFor(); got < 30*time.Second || got > 31*time.Second {
		t.Errorf("after a minute back, the ejection lasted %v, want 30s", got)
	}
	// The counters restart when it returns: 4 failures while it is out
	// and 1 after do not eject it again.
	out := now
	recordN(rt, h, 5, outcome5xx, 500, out)
	recordN(rt, h, 4, outcome5xx, 500, out.Add(time.Second))
	back := out.Add(2 * time.Minute)
	if isOut(h, back) {
		t.Fatal("still out after 2 minutes")
	}
	rt.record(h, outcome5xx, 500, back)
	if isOut(h, back) {
		t.Error("ejected again by one failure after returning")
	}
}

// TestOutlierMaxEjectionPercent: at most max_ejection_percent of the hosts
// are out at once, but one may always be with always_eject_one_host (which
// the xDS server sets); without it, as in Envoy, a 3-host cluster at 10%
// ejects none.
func TestOutlierMaxEjectionPercent(t *testing.T) {
	now := time.Now()
	on, off := true, false
	ejected := func(rt *clusterRT) int {
		for _, h := range rt.hosts {
			recordN(rt, h, 5, outcome5xx, 500, now)
		}
		n := 0
		for _, h := range rt.hosts {
			if isOut(h, now) {
				n++
			}
		}
		return n
	}
	for _, tc := range []struct {
		hosts    int
		pct      uint32 // 0: default 10
		alwaysOn *bool
		want     int
	}{
		{hosts: 3, want: 0},
		{hosts: 3, alwaysOn: &on, want: 1},
		{hosts: 3, alwaysOn: &off, want: 0},
		{hosts: 20, want: 2},
		{hosts: 20, alwaysOn: &on, want: 2},
		{hosts: 20, alwaysOn: &off, want: 2},
		{hosts: 4, pct: 50, want: 2},
		{hosts: 4, pct: 100, want: 4},
	} {
		od := &cluster.OutlierDetection{}
		if tc.pct > 0 {
			od.MaxEjectionPercent = wrapperspb.UInt32(tc.pct)
		}
		if tc.alwaysOn != nil {
			od.AlwaysEjectOneHost = wrapperspb.Bool(*tc.alwaysOn)
		}
		if got := ejected(buildRT(t, odCluster(tc.hosts, od), nil)); got != tc.want {
			t.Errorf("%d hosts, max %d%%, always_eject_one_host %v: %d ejected, want %d", tc.hosts, tc.pct, tc.alwaysOn, got, tc.want)
		}
	}
}

// TestOutlierConnectFailures: unless local-origin errors are split, a
// connect failure counts as a 5xx (and a gateway error); split, it counts
// only toward consecutive_local_origin_failure, and a TCP success resets
// that.
func TestOutlierConnectFailures(t *testing.T) {
	now := time.Now()
	rt := buildRT(t, meshODCluster(3, &cluster.OutlierDetection{}), nil)
	recordN(rt, rt.hosts[0], 3, outcome5xx, 500, now)
	recordN(rt, rt.hosts[0], 2, outcomeConnectFailure, 0, now)
	if !isOut(rt.hosts[0], now) {
		t.Error("not split: 3 5xx and 2 connect failures did not eject")
	}
	// A TCP success (code 0) resets the count.
	rt = buildRT(t, meshODCluster(3, &cluster.OutlierDetection{}), nil)
	recordN(rt, rt.hosts[0], 4, outcomeConnectFailure, 0, now)
	rt.record(rt.hosts[0], outcomeSuccess, 0, now)
	recordN(rt, rt.hosts[0], 4, outcomeConnectFailure, 0, now)
	if isOut(rt.hosts[0], now) {
		t.Error("a TCP success did not reset the count")
	}

	split := &cluster.OutlierDetection{SplitExternalLocalOriginErrors: true, ConsecutiveLocalOriginFailure: wrapperspb.UInt32(2),
		MaxEjectionPercent: wrapperspb.UInt32(100)}
	rt = buildRT(t, meshODCluster(3, split), nil)
	a, b := rt.hosts[0], rt.hosts[1]
	recordN(rt, a, 4, outcome5xx, 500, now)
	rt.record(a, outcomeConnectFailure, 0, now)
	rt.record(a, outcome5xx, 500, now) // the connection worked: local count restarts; 5th 5xx ejects
	if !isOut(a, now) {
		t.Error("split: 5 5xx did not eject")
	}
	rt.record(b, outcomeConnectFailure, 0, now)
	rt.record(b, outcomeSuccess, 0, now)
	rt.record(b, outcomeConnectFailure, 0, now)
	if isOut(b, now) {
		t.Error("split: a TCP success did not reset the local-origin count")
	}
	rt.record(b, outcomeConnectFailure, 0, now)
	if !isOut(b, now) {
		t.Error("split: 2 consecutive connect failures did not eject")
	}
	// Split, a connect failure is not a 5xx: 4 5xx and 1 connect failure
	// (5 failures when not split) leave the host in.
	c := rt.hosts[2]
	recordN(rt, c, 4, outcome5xx, 500, now)
	rt.record(c, outcomeConnectFailure, 0, now)
	if isOut(c, now) {
		t.Error("split: a connect failure counted as a 5xx")
	}
}
