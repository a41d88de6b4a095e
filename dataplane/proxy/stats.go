package proxy

import "sync/atomic"

// Envoy's upstream stats, kept where the traffic policy already keeps its
// per-cluster and per-endpoint state: plain atomic counters, bumped on
// the request path without a lookup or a lock, and read only when the
// admin listener's /clusters or a Prometheus scrape asks (collector.go,
// introspect.go). Like the state they live in, they outlive snapshots, so
// an endpoints update resets nothing.

// clusterStats are a cluster's counters (Envoy's cluster.<name>.*).
type clusterStats struct {
	rqTotal, rqSuccess, rqError atomic.Uint64    // upstream attempts, by outcome (error: 5xx or no response)
	rqRetry                     atomic.Uint64    // retries sent (upstream_rq_retry)
	cxTotal, cxConnectFail      atomic.Uint64    // upstream connections opened, and dials that failed
	ejections                   atomic.Uint64    // outlier ejections enforced (outlier_detection.ejections_enforced_total)
	overflow                    [4]atomic.Uint64 // circuit breaker overflows, by breaker (upstream_cx_overflow, upstream_rq_pending_overflow, ...)
}

// hostStats are an endpoint's counters (Envoy's /clusters host stats).
type hostStats struct {
	rqTotal, rqSuccess, rqError atomic.Uint64
	cxTotal, cxConnectFail      atomic.Uint64
	ejections                   atomic.Uint64
}

// outcome counts one attempt's result, as outlier detection sees it.
func (c *clusterRT) countOutcome(h *host, o outcome) {
	cs := &c.st.stats
	cs.rqTotal.Add(1)
	if h != nil {
		h.st.stats.rqTotal.Add(1)
	}
	if o == outcomeSuccess {
		cs.rqSuccess.Add(1)
		if h != nil {
			h.st.stats.rqSuccess.Add(1)
		}
		return
	}
	cs.rqError.Add(1)
	if h != nil {
		h.st.stats.rqError.Add(1)
	}
}

// countDial counts one upstream connection attempt of c to h.
func (c *clusterRT) countDial(h *host, err error) {
	if err != nil {
		c.st.stats.cxConnectFail.Add(1)
		h.st.stats.cxConnectFail.Add(1)
		return
	}
	c.st.stats.cxTotal.Add(1)
	h.st.stats.cxTotal.Add(1)
}

// breakerNames are the breakers as Envoy names their overflow stats.
var breakerNames = [...]string{
	breakerConnections: "max_connections",
	breakerPending:     "max_pending_requests",
	breakerRequests:    "max_requests",
	breakerRetries:     "max_retries",
}
