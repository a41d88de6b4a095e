package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/vmesh/vmesh/dataplane/proxy"
	"google.golang.org/protobuf/encoding/protojson"
)

// Proxy is what the admin endpoints read of the in-process proxy
// (*proxy.Proxy).
type Proxy interface {
	State() string
	NodeID() string
	Listeners() []proxy.ListenerStatus
	Clusters() []proxy.ClusterStatus
	ConfigDump() *adminv3.ConfigDump
}

// Config is what the admin listener serves.
type Config struct {
	// Proxy is the in-process proxy; nil when the agent runs without one
	// (then /ready answers LIVE, and /listeners, /clusters and
	// /config_dump have nothing to show).
	Proxy Proxy
	// Gatherer is the agent's metrics, for /stats; Prometheus serves
	// /stats/prometheus and /metrics in the exposition format.
	Gatherer   prometheus.Gatherer
	Prometheus http.Handler
	// Level is the agent's log level, which /logging reads and sets.
	Level *slog.LevelVar
	// Build names the binary (/server_info "version" and "build").
	Version string
	Build   any
	// Node describes the node (/server_info "node").
	Node map[string]string
	// Args are the agent's command line (/server_info); values of flags
	// that may carry secrets are redacted.
	Args    []string
	Started time.Time
	// Extra are further read-only handlers by path ("GET /xds/config_dump").
	Extra  map[string]http.Handler
	Logger *slog.Logger
}

// Handler serves the admin endpoints.
func Handler(cfg Config) http.Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Started.IsZero() {
		cfg.Started = time.Now()
	}
	s := &server{cfg: cfg}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.index)
	mux.HandleFunc("GET /ready", s.ready)
	mux.HandleFunc("GET /server_info", s.serverInfo)
	mux.HandleFunc("GET /listeners", s.listeners)
	mux.HandleFunc("GET /clusters", s.clusters)
	mux.HandleFunc("GET /stats", s.stats)
	mux.HandleFunc("GET /config_dump", s.configDump)
	mux.HandleFunc("GET /logging", s.logging)
	mux.HandleFunc("POST /logging", s.logging)
	if cfg.Prometheus != nil {
		mux.Handle("GET /stats/prometheus", cfg.Prometheus)
		mux.Handle("GET /metrics", cfg.Prometheus)
	}
	for pattern, h := range cfg.Extra {
		mux.Handle(pattern, h)
	}
	return guard(mux)
}

type server struct{ cfg Config }

// endpoints is the index (GET /), as Envoy's admin home lists its own.
var endpoints = [][2]string{
	{"/ready", "200 LIVE once the proxy applied its first listeners and clusters; 503 before"},
	{"/server_info", "version, state, uptime, command line and node (JSON)"},
	{"/listeners", "the proxy's listeners and their addresses (?format=json)"},
	{"/clusters", "the proxy's clusters: circuit breakers, counters, hosts with health flags and counters (?format=json)"},
	{"/stats", "every metric as name: value (?format=json, ?filter=regex)"},
	{"/stats/prometheus", "every metric in the Prometheus format (also /metrics)"},
	{"/config_dump", "the configuration the proxy applied, with versions; secrets redacted"},
	{"/xds/config_dump", "the xDS server's snapshot for each connected client (?node=ID)"},
	{"/logging", "GET: the log level; POST ?level=debug|info|warn|error: change it"},
}

func (s *server) index(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "vmesh admin commands are:")
	for _, e := range endpoints {
		fmt.Fprintf(w, "  %s: %s\n", e[0], e[1])
	}
}

func (s *server) state() string {
	if s.cfg.Proxy == nil {
		return proxy.StateLive // nothing to initialize: the agent serves without a proxy
	}
	return s.cfg.Proxy.State()
}

// ready is Envoy's /ready: 200 "LIVE" or 503 with the state, as a load
// balancer's or kubelet's probe reads it.
func (s *server) ready(w http.ResponseWriter, _ *http.Request) {
	st := s.state()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if st != proxy.StateLive {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	fmt.Fprintln(w, st)
}

func (s *server) serverInfo(w http.ResponseWriter, _ *http.Request) {
	up := time.Since(s.cfg.Started).Truncate(time.Second)
	node := map[string]string{}
	for k, v := range s.cfg.Node {
		node[k] = v
	}
	if s.cfg.Proxy != nil {
		node["id"] = s.cfg.Proxy.NodeID()
	}
	writeJSON(w, map[string]any{
		"version":              s.cfg.Version,
		"build":                s.cfg.Build,
		"state":                s.state(),
		"uptime_current_epoch": fmt.Sprintf("%ds", int64(up.Seconds())),
		"uptime_all_epochs":    fmt.Sprintf("%ds", int64(up.Seconds())),
		"command_line_options": map[string]any{"args": RedactArgs(s.cfg.Args)},
		"node":                 node,
	})
}

// secretFlag matches the flags whose value may be a secret (a token, a
// key, a password); a flag naming a file (-token-file) is only a path.
var secretFlag = regexp.MustCompile(`(?i)(token|secret|password|key)$`)

// RedactArgs is args with the values of secret-bearing flags replaced,
// in both "-flag=value" and "-flag value" forms.
func RedactArgs(args []string) []string {
	out := make([]string, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		out[i] = a
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !secretFlag.MatchString(name) {
			continue
		}
		if hasValue {
			out[i] = a[:strings.Index(a, "=")+1] + proxy.Redacted
		} else if i+1 < len(args) {
			i++
			out[i] = proxy.Redacted
		}
	}
	return out
}

func wantsJSON(r *http.Request) bool { return r.URL.Query().Get("format") == "json" }

func (s *server) listeners(w http.ResponseWriter, r *http.Request) {
	var ls []proxy.ListenerStatus
	if s.cfg.Proxy != nil {
		ls = s.cfg.Proxy.Listeners()
	}
	if wantsJSON(r) {
		type status struct {
			Name         string `json:"name"`
			LocalAddress string `json:"local_address"`
			Configured   string `json:"configured_address"`
		}
		out := []status{}
		for _, l := range ls {
			out = append(out, status{Name: l.Name, LocalAddress: l.Bound, Configured: l.Address})
		}
		writeJSON(w, map[string]any{"listener_statuses": out})
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	for _, l := range ls {
		addr := l.Bound
		if addr == "" {
			addr = l.Address + " (not bound)"
		}
		fmt.Fprintf(w, "%s::%s\n", l.Name, addr)
	}
}

// clusters is Envoy's /clusters: in text, one "cluster::field::value" or
// "cluster::host::stat::value" line each.
func (s *server) clusters(w http.ResponseWriter, r *http.Request) {
	var cs []proxy.ClusterStatus
	if s.cfg.Proxy != nil {
		cs = s.cfg.Proxy.Clusters()
	}
	if wantsJSON(r) {
		if cs == nil {
			cs = []proxy.ClusterStatus{}
		}
		writeJSON(w, map[string]any{"cluster_statuses": cs})
		return
	}
	var b bytes.Buffer
	for _, c := range cs {
		for _, k := range sortedKeys(c.Thresholds) {
			fmt.Fprintf(&b, "%s::default_priority::%s::%d\n", c.Name, k, c.Thresholds[k])
		}
		fmt.Fprintf(&b, "%s::added_via_api::true\n", c.Name)
		for _, k := range sortedKeys(c.Stats) {
			fmt.Fprintf(&b, "%s::%s::%d\n", c.Name, k, c.Stats[k])
		}
		for _, h := range c.Hosts {
			for _, k := range sortedKeys(h.Stats) {
				fmt.Fprintf(&b, "%s::%s::%s::%d\n", c.Name, h.Address, k, h.Stats[k])
			}
			fmt.Fprintf(&b, "%s::%s::health_flags::%s\n", c.Name, h.Address, h.HealthFlags)
			fmt.Fprintf(&b, "%s::%s::weight::%d\n", c.Name, h.Address, h.Weight)
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write(b.Bytes())
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

type stat struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
}

// stats is Envoy's /stats: every series as "name: value" (a histogram
// or summary as its _count and _sum), then the proxy's cluster counters
// in Envoy's own names (cluster.<name>.<stat>, cluster.<name>.<host>.<stat>).
// ?filter= keeps the names a regular expression matches; ?format=json.
func (s *server) stats(w http.ResponseWriter, r *http.Request) {
	var filter *regexp.Regexp
	if f := r.URL.Query().Get("filter"); f != "" {
		var err error
		if filter, err = regexp.Compile(f); err != nil {
			http.Error(w, fmt.Sprintf("filter: %v", err), http.StatusBadRequest)
			return
		}
	}
	var out []stat
	add := func(name string, v float64) {
		if filter == nil || filter.MatchString(name) {
			out = append(out, stat{name, v})
		}
	}
	if s.cfg.Gatherer != nil {
		mfs, err := s.cfg.Gatherer.Gather()
		if err != nil {
			s.cfg.Logger.Warn("gathering metrics for /stats", "err", err) // what was gathered is still shown
		}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				name, labels := mf.GetName(), labelString(m.GetLabel())
				switch mf.GetType() {
				case dto.MetricType_COUNTER:
					add(name+labels, m.GetCounter().GetValue())
				case dto.MetricType_GAUGE:
					add(name+labels, m.GetGauge().GetValue())
				case dto.MetricType_UNTYPED:
					add(name+labels, m.GetUntyped().GetValue())
				case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
					add(name+"_count"+labels, float64(m.GetHistogram().GetSampleCount()))
					add(name+"_sum"+labels, m.GetHistogram().GetSampleSum())
				case dto.MetricType_SUMMARY:
					add(name+"_count"+labels, float64(m.GetSummary().GetSampleCount()))
					add(name+"_sum"+labels, m.GetSummary().GetSampleSum())
				}
			}
		}
	}
	if s.cfg.Proxy != nil {
		for _, c := range s.cfg.Proxy.Clusters() {
			for _, k := range sortedKeys(c.Stats) {
				add("cluster."+c.Name+"."+k, float64(c.Stats[k]))
			}
			for _, h := range c.Hosts {
				for _, k := range sortedKeys(h.Stats) {
					add("cluster."+c.Name+"."+h.Address+"."+k, float64(h.Stats[k]))
				}
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if wantsJSON(r) {
		for i := range out {
			if math.IsNaN(out[i].Value) || math.IsInf(out[i].Value, 0) {
				out[i].Value = 0 // JSON has no NaN
			}
		}
		if out == nil {
			out = []stat{}
		}
		writeJSON(w, map[string]any{"stats": out})
		return
	}
	var b bytes.Buffer
	for _, st := range out {
		fmt.Fprintf(&b, "%s: %s\n", st.Name, strconv.FormatFloat(st.Value, 'g', -1, 64))
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write(b.Bytes())
}

func labelString(ls []*dto.LabelPair) string {
	if len(ls) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, l := range ls {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", l.GetName(), l.GetValue())
	}
	b.WriteByte('}')
	return b.String()
}

// configDump is Envoy's /config_dump of what the proxy applied.
func (s *server) configDump(w http.ResponseWriter, _ *http.Request) {
	if s.cfg.Proxy == nil {
		http.Error(w, "this agent runs no in-process proxy (-proxy=false); the xDS server's view is at /xds/config_dump", http.StatusNotFound)
		return
	}
	js, err := (protojson.MarshalOptions{UseProtoNames: true}).Marshal(s.cfg.Proxy.ConfigDump())
	var out bytes.Buffer
	if err == nil {
		// (protojson varies its spacing on purpose; json.Indent makes it
		// stable for diff and grep)
		err = json.Indent(&out, js, "", "  ")
	}
	if err != nil {
		http.Error(w, "rendering the config dump: "+err.Error(), http.StatusInternalServerError)
		return
	}
	out.WriteByte('\n')
	w.Header().Set("Content-Type", "application/json")
	w.Write(out.Bytes())
}

// levels are the names /logging accepts, Envoy's included.
var levels = map[string]slog.Level{
	"trace": slog.LevelDebug, "debug": slog.LevelDebug, "info": slog.LevelInfo,
	"warn": slog.LevelWarn, "warning": slog.LevelWarn, "error": slog.LevelError, "critical": slog.LevelError,
}

// logging shows the log level (GET) or sets it (POST ?level=). Setting is
// POST-only, as in Envoy since 1.16: a GET is what a browser sends for a
// link, an <img> or a prefetch, so a page on the operator's browser could
// otherwise turn debug logging on (a disk and privacy cost) by naming the
// URL.
func (s *server) logging(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	level := q.Get("level")
	if r.Method == http.MethodGet && len(q) > 0 {
		w.Header().Set("Allow", "POST")
		http.Error(w, "changing the log level needs POST /logging?level=... (mutating admin endpoints are POST-only, so a page or prefetch that GETs the URL cannot change it)", http.StatusMethodNotAllowed)
		return
	}
	if s.cfg.Level == nil {
		http.Error(w, "this agent's log level cannot be changed at run time", http.StatusNotImplemented)
		return
	}
	if r.Method == http.MethodPost {
		if level == "" {
			http.Error(w, "level: missing (debug, info, warn or error)", http.StatusBadRequest)
			return
		}
		l, ok := levels[strings.ToLower(level)]
		if !ok {
			http.Error(w, fmt.Sprintf("level: %q is not one of debug, info, warn, error", level), http.StatusBadRequest)
			return
		}
		old := s.cfg.Level.Level()
		s.cfg.Level.Set(l)
		s.cfg.Logger.Warn("log level changed through the admin listener", "from", strings.ToLower(old.String()), "to", strings.ToLower(l.String()),
			"remote", r.RemoteAddr)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "active loggers:\n  vmesh: %s\n", strings.ToLower(s.cfg.Level.Level().String()))
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// guard refuses what a browser could be made to send from another site:
// on a loopback address, a request whose Host is a name other than
// localhost or this host's (a DNS-rebound name pointing at loopback; a
// listener bound elsewhere is scraped by whatever names the network gives
// it), and anywhere a POST that a page of another origin sent (Origin or
// Sec-Fetch-Site say so). Tools (curl, Prometheus, kubelet probes) send
// none of those, or an IP address.
func guard(next http.Handler) http.Handler {
	hostname, _ := os.Hostname()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if onLoopback(r) && !allowedHost(r.Host, hostname) {
			http.Error(w, fmt.Sprintf("Host %q: the admin listener answers requests to an IP address, localhost or this host's name only", r.Host), http.StatusForbidden)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && crossSite(r) {
			http.Error(w, "cross-site requests may not change the admin listener's state", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// onLoopback: the request came in on a loopback address (or from a test,
// which has none).
func onLoopback(r *http.Request) bool {
	a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return true
	}
	tcp, ok := a.(*net.TCPAddr)
	return !ok || tcp.IP.IsLoopback()
}

func allowedHost(hostport, hostname string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if host == "" || net.ParseIP(host) != nil || strings.EqualFold(host, "localhost") {
		return true
	}
	return hostname != "" && strings.EqualFold(host, hostname)
}

func crossSite(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return true
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		return err != nil || u.Host != r.Host
	}
	return false
}
