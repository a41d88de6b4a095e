package httpapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
)

// registerAgentInfo adds the agent's operational endpoints of Consul's API:
// join, metrics, host and the local service health.
func (a *API) registerAgentInfo(mux *http.ServeMux) {
	mux.Handle("PUT /v1/agent/join/{address}", a.guard(func(z *acl.Authorizer) error { return z.AgentWrite(a.NodeName) }, http.HandlerFunc(a.agentJoin)))
	mux.Handle("GET /v1/agent/metrics", a.guard(func(z *acl.Authorizer) error { return z.AgentRead(a.NodeName) }, http.HandlerFunc(a.agentMetrics)))
	mux.Handle("GET /v1/agent/host", a.guard(func(z *acl.Authorizer) error { return z.OperatorRead() }, http.HandlerFunc(a.agentHost)))
	mux.HandleFunc("GET /v1/agent/health/service/id/{id}", a.agentHealthServiceByID)
	mux.HandleFunc("GET /v1/agent/health/service/name/{name}", a.agentHealthServiceByName)
}

// agentJoin serves PUT /v1/agent/join/:address (agent:write on this
// agent's node, as Consul). A vmesh agent joins a cluster once, with a
// join token (PUT /v1/vmesh/join): joining the cluster it is already in
// (its own address or a member's) succeeds and changes nothing, as in
// Consul; anything else is refused with the way to do it.
func (a *API) agentJoin(w http.ResponseWriter, r *http.Request) {
	addr := r.PathValue("address")
	if v := r.URL.Query().Get("wan"); v != "" && v != "0" && v != "false" {
		a.writeError(w, r, badRequest("wan: vmesh has one datacenter per cluster and no WAN pool to join"))
		return
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		a.writeError(w, r, badRequest("address: %q is not host:port (a member's cluster address)", addr))
		return
	}
	leader, _ := a.Cluster.Leader()
	if leader != "" {
		for _, m := range a.members() {
			if sameHost(m.Addr, host) && strconv.Itoa(int(m.Port)) == port {
				w.WriteHeader(http.StatusOK) // already in that member's cluster
				return
			}
		}
		a.writeError(w, r, &HTTPError{Code: http.StatusConflict,
			Msg: "this agent is already a member of a cluster, and " + addr + " is not one of its members: leave it first (vmesh leave), then join with a join token"})
		return
	}
	a.writeError(w, r, badRequest("joining needs a join token, which this endpoint cannot carry: use PUT /v1/vmesh/join with {\"Addr\": %q, \"Token\": ...} or `vmesh join`", addr))
}

func sameHost(a, b string) bool {
	ia, ea := net.ResolveIPAddr("ip", a)
	ib, eb := net.ResolveIPAddr("ip", b)
	if ea != nil || eb != nil {
		return strings.EqualFold(a, b)
	}
	return ia.IP.Equal(ib.IP)
}

// metricsSummary is go-metrics' in-memory summary, the JSON Consul's
// /v1/agent/metrics answers (consul/api's MetricsInfo).
type metricsSummary struct {
	Timestamp string
	Gauges    []gaugeValue
	Points    []struct{}
	Counters  []sampledValue
	Samples   []sampledValue
}

type gaugeValue struct {
	Name   string
	Value  float32
	Labels map[string]string
}

type sampledValue struct {
	Name   string
	Count  int
	Rate   float64
	Sum    float64
	Min    float64
	Max    float64
	Mean   float64
	Stddev float64
	Labels map[string]string
}

// agentMetrics serves GET /v1/agent/metrics (agent:read on this node, as
// Consul): the agent's Prometheus metrics as go-metrics' summary, with
// the Go runtime gauges under Consul's names
// (consul.<host>.runtime.alloc_bytes, ...), or, with ?format=prometheus,
// the Prometheus text.
func (a *API) agentMetrics(w http.ResponseWriter, r *http.Request) {
	g := a.Metrics
	if g == nil {
		g = prometheus.NewRegistry()
	}
	switch f := r.URL.Query().Get("format"); f {
	case "prometheus":
		promhttp.HandlerFor(g, promhttp.HandlerOpts{}).ServeHTTP(w, r)
		return
	case "":
	default:
		a.writeError(w, r, badRequest("format: %q is not prometheus (or absent, for JSON)", f))
		return
	}
	mfs, err := g.Gather()
	if err != nil && len(mfs) == 0 {
		a.writeError(w, r, err)
		return
	}
	out := metricsSummary{Timestamp: time.Now().UTC().Truncate(10 * time.Second).String(),
		Gauges: runtimeGauges(), Points: []struct{}{}, Counters: []sampledValue{}, Samples: []sampledValue{}}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			name := mf.GetName()
			switch mf.GetType() {
			case dto.MetricType_GAUGE:
				out.Gauges = append(out.Gauges, gaugeValue{Name: name, Value: float32(m.GetGauge().GetValue()), Labels: labels})
			case dto.MetricType_UNTYPED:
				out.Gauges = append(out.Gauges, gaugeValue{Name: name, Value: float32(m.GetUntyped().GetValue()), Labels: labels})
			case dto.MetricType_COUNTER:
				v := m.GetCounter().GetValue()
				out.Counters = append(out.Counters, sampledValue{Name: name, Count: 1, Sum: v, Min: v, Max: v, Mean: v, Labels: labels})
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				out.Samples = append(out.Samples, sample(name, h.GetSampleCount(), h.GetSampleSum(), labels))
			case dto.MetricType_SUMMARY:
				s := m.GetSummary()
				out.Samples = append(out.Samples, sample(name, s.GetSampleCount(), s.GetSampleSum(), labels))
			}
		}
	}
	writeJSON(w, out)
}

func sample(name string, count uint64, sum float64, labels map[string]string) sampledValue {
	v := sampledValue{Name: name, Count: int(count), Sum: sum, Labels: labels}
	if count > 0 {
		v.Mean = sum / float64(count)
	}
	return v
}

// runtimeGauges are go-metrics' runtime statistics under the names a
// Consul agent reports them (its hostname is in them).
func runtimeGauges() []gaugeValue {
	host, _ := os.Hostname()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	prefix := "consul." + host + ".runtime."
	vals := []struct {
		name string
		v    float64
	}{
		{"num_goroutines", float64(runtime.NumGoroutine())},
		{"alloc_bytes", float64(ms.Alloc)},
		{"sys_bytes", float64(ms.Sys)},
		{"malloc_count", float64(ms.Mallocs)},
		{"free_count", float64(ms.Frees)},
		{"heap_objects", float64(ms.HeapObjects)},
		{"total_gc_pause_ns", float64(ms.PauseTotalNs)},
		{"total_gc_runs", float64(ms.NumGC)},
	}
	out := make([]gaugeValue, 0, len(vals))
	for _, v := range vals {
		out = append(out, gaugeValue{Name: prefix + v.name, Value: float32(v.v), Labels: map[string]string{}})
	}
	return out
}

// agentHost serves GET /v1/agent/host (operator:read, as Consul): what
// Consul's debug.HostInfo reports of the host, read from /proc and
// statfs. A part that cannot be read is named in Errors.
func (a *API) agentHost(w http.ResponseWriter, r *http.Request) {
	out := map[string]any{"CollectionTime": time.Now().UnixNano()}
	var errs []string
	host, _ := os.Hostname()
	hostInfo := map[string]any{"hostname": host, "os": runtime.GOOS, "kernelArch": runtime.GOARCH}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		hostInfo["kernelVersion"] = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/uptime"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			if up, err := strconv.ParseFloat(f[0], 64); err == nil {
				hostInfo["uptime"] = uint64(up)
				hostInfo["bootTime"] = uint64(time.Now().Unix() - int64(up))
			}
		}
	}
	out["Host"] = hostInfo
	if mem, err := meminfo(); err == nil {
		out["Memory"] = mem
	} else {
		errs = append(errs, "memory: "+err.Error())
	}
	out["CPU"] = cpuInfo()
	var st syscall.Statfs_t
	if err := syscall.Statfs("/", &st); err == nil {
		total, free := st.Blocks*uint64(st.Bsize), st.Bavail*uint64(st.Bsize)
		disk := map[string]any{"path": "/", "total": total, "free": free, "used": total - st.Bfree*uint64(st.Bsize)}
		if total > 0 {
			disk["usedPercent"] = 100 * float64(total-st.Bfree*uint64(st.Bsize)) / float64(total)
		}
		out["Disk"] = disk
	} else {
		errs = append(errs, "disk: "+err.Error())
	}
	out["Errors"] = errs
	writeJSON(w, out)
}

// meminfo reads /proc/meminfo into gopsutil's VirtualMemoryStat names.
func meminfo() (map[string]any, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return nil, err
	}
	kb := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 {
			v, _ := strconv.ParseUint(f[1], 10, 64)
			kb[strings.TrimSuffix(f[0], ":")] = v * 1024
		}
	}
	total, avail := kb["MemTotal"], kb["MemAvailable"]
	out := map[string]any{"total": total, "available": avail, "used": total - avail, "free": kb["MemFree"],
		"buffers": kb["Buffers"], "cached": kb["Cached"], "swapTotal": kb["SwapTotal"], "swapFree": kb["SwapFree"]}
	if total > 0 {
		out["usedPercent"] = 100 * float64(total-avail) / float64(total)
	}
	return out, nil
}

// cpuInfo is one entry per CPU, as gopsutil's InfoStat (the fields
// /proc/cpuinfo has).
func cpuInfo() []map[string]any {
	out := []map[string]any{}
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return out
	}
	for _, block := range strings.Split(string(b), "\n\n") {
		kv := map[string]string{}
		for _, line := range strings.Split(block, "\n") {
			k, v, ok := strings.Cut(line, ":")
			if ok {
				kv[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
		}
		if _, ok := kv["processor"]; !ok {
			continue
		}
		n, _ := strconv.Atoi(kv["processor"])
		mhz, _ := strconv.ParseFloat(kv["cpu MHz"], 64)
		cores, _ := strconv.Atoi(kv["cpu cores"])
		out = append(out, map[string]any{"cpu": n, "vendorId": kv["vendor_id"], "family": kv["cpu family"],
			"model": kv["model"], "modelName": kv["model name"], "mhz": mhz, "cores": cores, "physicalId": kv["physical id"]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i]["cpu"].(int) < out[j]["cpu"].(int) })
	return out
}

// debugConfig is /v1/agent/self's DebugConfig: the agent's settings under
// Consul's names (what the agent gives in DebugConfig, no secrets), and
// this agent's cluster address as Consul's Serf and RPC addresses (the
// cluster port does their work).
func (a *API) debugConfig() map[string]any {
	out := map[string]any{}
	if a.DebugConfig != nil {
		for k, v := range a.DebugConfig() {
			out[k] = v
		}
	}
	out["NodeName"], out["NodeID"], out["Datacenter"], out["PrimaryDatacenter"] = a.NodeName, a.NodeID, a.Datacenter, a.Datacenter
	out["ACLsEnabled"] = a.ACL != nil
	out["ConnectEnabled"], out["ConnectCAProvider"] = true, "consul"
	if self := a.selfMember(); self.Addr != "" {
		cluster := "tcp://" + net.JoinHostPort(self.Addr, strconv.Itoa(int(self.Port)))
		out["SerfAdvertiseAddrLAN"], out["SerfBindAddrLAN"], out["RPCAdvertiseAddr"], out["RPCBindAddr"] = cluster, cluster, cluster, cluster
	}
	return out
}

// agentServiceHealth is one local instance and its checks, as Consul's
// /v1/agent/health/service/* answers (consul/api's AgentServiceChecksInfo).
type agentServiceHealth struct {
	AggregatedStatus string
	Service          *agentService
	Checks           []*healthCheck
}

// healthRank orders statuses from best to worst, as Consul aggregates.
var healthRank = map[string]int{discovery.HealthPassing: 0, discovery.HealthWarning: 1, discovery.HealthCritical: 2}

// healthCode is the status code Consul answers an aggregated status with.
func healthCode(status string) int {
	switch status {
	case discovery.HealthPassing:
		return http.StatusOK
	case discovery.HealthWarning:
		return http.StatusTooManyRequests
	}
	return http.StatusServiceUnavailable
}

// localServiceHealth reads this node's instances that match and their
// checks (node checks not included, as Consul), with the aggregate.
func (a *API) localServiceHealth(match func(*discovery.Instance) bool) ([]agentServiceHealth, error) {
	_, insts, err := a.Store.NodeInstances(nil, a.NodeName)
	if err != nil {
		return nil, err
	}
	_, checks, err := a.Store.NodeChecks(nil, a.NodeName)
	if err != nil {
		return nil, err
	}
	var out []agentServiceHealth
	for _, in := range insts {
		if in.IsServerService() || !match(in) {
			continue
		}
		h := agentServiceHealth{AggregatedStatus: discovery.HealthPassing, Service: toAgentService(in, a.Datacenter), Checks: []*healthCheck{}}
		for _, c := range checks {
			// A sidecar record's health is its service's (discovery/sidecar.go).
			if c.ServiceID != in.ID && (in.SidecarFor == "" || c.ServiceID != in.SidecarFor) {
				continue
			}
			h.Checks = append(h.Checks, toHealthCheck(c))
			if healthRank[c.Status] > healthRank[h.AggregatedStatus] {
				h.AggregatedStatus = c.Status
			}
		}
		out = append(out, h)
	}
	return out, nil
}

// agentHealthServiceByID serves GET /v1/agent/health/service/id/:id
// (service:read on its service, as Consul): 200 passing, 429 warning, 503
// critical, 404 for an unknown ID; ?format=text answers the status alone.
func (a *API) agentHealthServiceByID(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	hs, err := a.localServiceHealth(func(in *discovery.Instance) bool { return in.ID == id })
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if len(hs) == 0 {
		a.writeError(w, r, notFound("ServiceId %s not found", id))
		return
	}
	if _, ok := a.allow(w, r, func(z *acl.Authorizer) error { return z.ServiceRead(hs[0].Service.Service) }); !ok {
		return
	}
	writeServiceHealth(w, r, hs[0].AggregatedStatus, hs[0])
}

// agentHealthServiceByName serves GET /v1/agent/health/service/name/:name
// (service:read on it): every local instance of the service, with the
// worst status as the code; 404 when there is none.
func (a *API) agentHealthServiceByName(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, ok := a.allow(w, r, func(z *acl.Authorizer) error { return z.ServiceRead(name) }); !ok {
		return
	}
	hs, err := a.localServiceHealth(func(in *discovery.Instance) bool { return in.Service == name })
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if len(hs) == 0 {
		a.writeError(w, r, notFound("ServiceName %s not found", name))
		return
	}
	worst := discovery.HealthPassing
	for _, h := range hs {
		if healthRank[h.AggregatedStatus] > healthRank[worst] {
			worst = h.AggregatedStatus
		}
	}
	writeServiceHealth(w, r, worst, hs)
}

func writeServiceHealth(w http.ResponseWriter, r *http.Request, status string, body any) {
	code := healthCode(status)
	if r.URL.Query().Get("format") == "text" {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(code)
		_, _ = w.Write([]byte(status))
		return
	}
	b, err := json.Marshal(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}
