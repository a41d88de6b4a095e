package proxy

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	accesslog "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	fileal "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	streamal "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
)

// Access logs: Envoy's access loggers (envoy.access_loggers.file, .stdout
// and .stderr) on an HTTP connection manager (a line per request, when it
// ends), a TCP proxy (a line per connection, when it closes) and a
// listener (a line per connection refused before a filter chain took it:
// no chain matched, not mesh mTLS, the TLS handshake failed). The format
// is compiled when the configuration is parsed (accesslog_format.go);
// lines go to a sink per destination that never blocks the request path
// (accesslog_sink.go).
//
// Whatever the access logs say, a refused request or connection (403 by
// RBAC, 503 no healthy upstream or overflow, 504 timeout, 400 for a bad
// path or framing, a TCP connection denied or with no upstream) is logged
// at warn through the proxy's logger with its reason, rate-limited per
// reason (refusal below).

// accessLogSpec is one access logger.
type accessLogSpec struct {
	// sink is "file:<path>", "stdout" or "stderr".
	sink string
	path string
	// field names the path in the configuration, for the warn line of a
	// refused path; refused is set, when the listener is accepted, for
	// a file outside Config.AccessLogDir (accesslog_dir.go): the logger
	// writes nothing.
	field   string
	refused bool
	format  *logFormat
	// cached is the sink, once looked up (a spec belongs to one proxy).
	cached atomic.Pointer[logSink]
}

// defaultTextFormat is Envoy's default format, for a logger that sets
// none.
const defaultTextFormat = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"` + "\n"

// parseAccessLogs reads a listener's, HCM's or TCP proxy's access_log.
func parseAccessLogs(logs []*accesslog.AccessLog, path string) ([]*accessLogSpec, error) {
	var out []*accessLogSpec
	for i, l := range logs {
		lp := fmt.Sprintf("%s.access_log[%d]", path, i)
		if err := onlyFields(l, lp, "name", "typed_config"); err != nil {
			return nil, err
		}
		s := &accessLogSpec{}
		var format *core.SubstitutionFormatString
		switch l.GetTypedConfig().GetTypeUrl() {
		case "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog":
			var f fileal.FileAccessLog
			if err := unpack(l.GetTypedConfig(), &f, lp); err != nil {
				return nil, err
			}
			if err := onlyFields(&f, lp+" file", "path", "log_format"); err != nil {
				return nil, err
			}
			if err := checkLogPath(f.GetPath()); err != nil {
				return nil, fmt.Errorf("%w: %s file.path: %w", ErrInvalid, lp, err)
			}
			s.sink, s.path, s.field, format = "file:"+f.GetPath(), f.GetPath(), lp+" file.path", f.GetLogFormat()
		case "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog":
			var f streamal.StdoutAccessLog
			if err := unpack(l.GetTypedConfig(), &f, lp); err != nil {
				return nil, err
			}
			if err := onlyFields(&f, lp+" stdout", "log_format"); err != nil {
				return nil, err
			}
			s.sink, format = "stdout", f.GetLogFormat()
		case "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog":
			var f streamal.StderrAccessLog
			if err := unpack(l.GetTypedConfig(), &f, lp); err != nil {
				return nil, err
			}
			if err := onlyFields(&f, lp+" stderr", "log_format"); err != nil {
				return nil, err
			}
			s.sink, format = "stderr", f.GetLogFormat()
		default:
			return nil, fmt.Errorf("%w: %s: access logger %q (%s)", ErrUnsupported, lp, l.GetName(), l.GetTypedConfig().GetTypeUrl())
		}
		f, err := parseLogFormat(format, lp+".log_format")
		if err != nil {
			return nil, err
		}
		s.format = f
		out = append(out, s)
	}
	return out, nil
}

// parseLogFormat compiles a SubstitutionFormatString (nil: Envoy's
// default text format).
func parseLogFormat(f *core.SubstitutionFormatString, path string) (*logFormat, error) {
	if f == nil {
		t, err := compileText(defaultTextFormat)
		return &logFormat{text: t}, err
	}
	if err := onlyFields(f, path, "text_format", "text_format_source", "json_format"); err != nil {
		return nil, err
	}
	switch {
	case f.GetJsonFormat() != nil:
		fields, err := compileJSON(f.GetJsonFormat())
		if err != nil {
			return nil, fmt.Errorf("%w: %s.%w", ErrInvalid, path, err)
		}
		return &logFormat{json: fields}, nil
	case f.GetTextFormatSource() != nil:
		ds := f.GetTextFormatSource()
		if err := onlyFields(ds, path+".text_format_source", "inline_string"); err != nil {
			return nil, err
		}
		t, err := compileText(ds.GetInlineString())
		if err != nil {
			return nil, fmt.Errorf("%w: %s.text_format_source: %w", ErrInvalid, path, err)
		}
		return &logFormat{text: t}, nil
	default:
		t, err := compileText(f.GetTextFormat())
		if err != nil {
			return nil, fmt.Errorf("%w: %s.text_format: %w", ErrInvalid, path, err)
		}
		return &logFormat{text: t}, nil
	}
}

// checkLogPath refuses what must never be appended to: a relative path,
// and the kernel's and devices' files, which take writes as commands.
func checkLogPath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("%q is not an absolute path", p)
	}
	for _, d := range []string{"/proc/", "/sys/", "/dev/"} {
		if strings.HasPrefix(p, d) {
			return fmt.Errorf("%q is under %s", p, d)
		}
	}
	return nil
}

// ---- Response flags (Envoy's, in Envoy's order).

type respFlags uint32

const (
	flagUH  respFlags = 1 << iota // no healthy upstream
	flagUF                        // upstream connection failure
	flagUO                        // upstream overflow (circuit breaker)
	flagNR                        // no route, or no filter chain
	flagURX                       // upstream retry limit exceeded
	flagNC                        // no cluster
	flagDC                        // downstream connection termination
	flagUT                        // upstream request timeout
	flagUR                        // upstream remote reset
	flagUC                        // upstream connection termination
	flagSI                        // stream idle timeout
	flagDPE                       // downstream protocol error
	flagUPE                       // upstream protocol error
)

var flagNames = []struct{ short, long string }{
	{"UH", "NoHealthyUpstream"}, {"UF", "UpstreamConnectionFailure"}, {"UO", "UpstreamOverflow"},
	{"NR", "NoRouteFound"}, {"URX", "UpstreamRetryLimitExceeded"}, {"NC", "NoClusterFound"},
	{"DC", "DownstreamConnectionTermination"}, {"UT", "UpstreamRequestTimeout"}, {"UR", "UpstreamRemoteReset"},
	{"UC", "UpstreamConnectionTermination"}, {"SI", "StreamIdleTimeout"}, {"DPE", "DownstreamProtocolError"},
	{"UPE", "UpstreamProtocolError"},
}

func (f respFlags) appendShort(b []byte) []byte { return f.appendNames(b, false) }
func (f respFlags) appendLong(b []byte) []byte  { return f.appendNames(b, true) }

func (f respFlags) appendNames(b []byte, long bool) []byte {
	first := true
	for i, n := range flagNames {
		if f&(1<<i) == 0 {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		if long {
			b = append(b, n.long...)
		} else {
			b = append(b, n.short...)
		}
	}
	return b
}

func (f respFlags) String() string {
	if f == 0 {
		return "-"
	}
	return string(f.appendShort(nil))
}

// Response code details, Envoy's words.
const (
	detailsViaUpstream  = "via_upstream"
	detailsRBAC         = "rbac_access_denied_matched_policy[none]"
	detailsNoHealthy    = "no_healthy_upstream"
	detailsNoCluster    = "cluster_not_found"
	detailsNoRoute      = "route_not_found"
	detailsUpgrade      = "upgrade_failed"
	detailsBadPath      = "path_normalization_failed"
	detailsOverflow     = "upstream_reset_before_response_started{overflow}"
	detailsConnFailure  = "upstream_reset_before_response_started{connection_failure}"
	detailsConnTerm     = "upstream_reset_before_response_started{connection_termination}"
	detailsRefused      = "upstream_reset_before_response_started{remote_refused_stream_reset}"
	detailsTimeout      = "upstream_response_timeout"
	detailsStreamIdle   = "stream_idle_timeout"
	detailsUpstreamPE   = "upstream_reset_before_response_started{protocol_error}"
	detailsDownstreamDC = "downstream_remote_disconnect"
	detailsNoChain      = "filter_chain_not_found"
	detailsNotMesh      = "non_mesh_connection_refused"
	detailsTLSFailed    = "downstream_tls_handshake_failed"
)

// localReplyCause is the flag and details of a local reply, by its status
// and body (the bodies are Envoy's, one per cause).
func localReplyCause(l *localReply) (respFlags, string) {
	switch l.body {
	case bodyRBACDenied:
		return 0, detailsRBAC
	case bodyNoHealthy:
		return flagUH, detailsNoHealthy
	case bodyNoCluster:
		return flagNC, detailsNoCluster
	case bodyConnectFailure:
		return flagUF, detailsConnFailure
	case bodyReset:
		return flagUC, detailsConnTerm
	case bodyRefused:
		return flagUR, detailsRefused
	case bodyOverflow:
		return flagUO, detailsOverflow
	case bodyTimeout:
		return flagUT, detailsTimeout
	case bodyStreamIdle:
		return flagSI, detailsStreamIdle
	case bodyBadPath:
		return 0, detailsBadPath
	}
	switch l.code {
	case http.StatusNotFound:
		return flagNR, detailsNoRoute
	case http.StatusForbidden:
		return 0, detailsUpgrade
	case http.StatusBadGateway:
		return flagUPE, detailsUpstreamPE
	}
	return 0, ""
}

// ---- One line's values.

// logEntry is what one line may say. Strings are not copied: the entry
// lives as long as the stream or connection it describes.
type logEntry struct {
	start                         time.Time
	protocol                      string
	code                          int
	details, termination          string
	flags                         respFlags
	bytesIn, bytesOut             int64
	duration                      time.Duration
	reqDuration, respDuration     time.Duration // -1: not measured
	upstreamHost, upstreamCluster string
	// upstreamAddr and downstreamAddr stand for upstreamHost and
	// downstreamLocal when those are empty (formatted only if a line
	// uses them).
	upstreamAddr, downstreamAddr netip.AddrPort
	upstreamLocal                string
	upstreamFailure              string
	downstreamLocal              string
	downstreamRemote             string
	peerIDs                      []string
	localURI, sni, routeName     string
	req                          *http.Request
	respHeaders, trailers        http.Header
}

// reqHeader is a request header, or a pseudo-header, of the entry's
// request ("" without one).
func (e *logEntry) reqHeader(k string) string {
	r := e.req
	if r == nil {
		return ""
	}
	switch k {
	case ":method":
		return r.Method
	case ":path":
		return r.URL.RequestURI()
	case ":authority":
		return r.Host
	case ":scheme":
		if r.TLS != nil {
			return "https"
		}
		return "http"
	}
	if strings.HasPrefix(k, ":") {
		return ""
	}
	if v := r.Header[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// writeLogs renders e with every logger of logs and hands the lines to
// their sinks.
func (p *Proxy) writeLogs(logs []*accessLogSpec, e *logEntry) {
	for _, l := range logs {
		if l.refused {
			continue
		}
		s := l.cached.Load()
		if s == nil {
			s = p.sinks.get(p, l)
			l.cached.Store(s)
		}
		s.write(l.format, e)
	}
}

// ---- Hooks in the request path.

// logStream writes a finished stream's access log lines and, when it was
// refused, the warn line; d is the stream's duration, as its metrics got
// it.
func (s *stream) logStream(in, out int64, d time.Duration) {
	refused := s.localCode >= 400 || s.w.code == 0
	logs := s.hcm.logs
	if len(logs) == 0 && !refused {
		return
	}
	e := &logEntry{
		start: s.start, protocol: protoName(s.r), code: s.w.code, flags: s.flags, details: s.details,
		bytesIn: in, bytesOut: out, duration: d, reqDuration: -1, respDuration: -1,
		upstreamCluster: s.upstream, downstreamAddr: s.hc.dst, upstreamAddr: s.upHost, downstreamRemote: s.hc.remote,
		peerIDs: s.hc.ids, localURI: s.hc.localURI, sni: s.hc.sni, req: s.r,
		respHeaders: s.w.Header(), trailers: s.w.Header(),
	}
	switch {
	case s.w.code == 0:
		// Nothing was answered: the downstream went away first.
		e.flags |= flagDC
		e.details = detailsDownstreamDC
	case e.details == "":
		e.details = detailsViaUpstream
	}
	if len(logs) > 0 {
		s.hc.p.writeLogs(logs, e)
	}
	if s.localCode >= 400 {
		s.hc.p.refusals.note(s.hc.p, e.details, "request refused",
			"listener", s.hc.rl.name, "code", s.localCode, "flags", e.flags.String(), "details", e.details,
			"method", s.r.Method, "path", truncate(s.r.URL.Path, 256), "authority", truncate(s.r.Host, 256),
			"remote", s.hc.remote, "peer", strings.Join(s.hc.ids, ","), "cluster", s.upstream, "upstream_host", addrString(s.upHost),
			"request_id", truncate(s.r.Header.Get("X-Request-Id"), 64))
	}
}

// noteLocalReply records why the proxy answered a request itself.
func (s *stream) noteLocalReply(l *localReply) {
	s.localCode = l.code
	f, d := localReplyCause(l)
	s.flags |= f
	s.details = d
}

// noteAttempts records the final attempt of a stream's upstream exchange:
// its endpoint, and whether the retries ran out on a result they would
// have retried.
func (s *stream) noteAttempts(last attempt, tries, max int) {
	if last.h != nil {
		s.upHost = last.h.addr
	}
	if max > 1 && tries == max && s.retryable(last) {
		s.flags |= flagURX
	}
}

func protoName(r *http.Request) string {
	if r.ProtoMajor == 2 {
		return "HTTP/2"
	}
	return r.Proto
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// ---- Refusals at warn, rate-limited.

// refusalBurst and refusalEvery size each reason's token bucket: a burst
// of lines, then one per interval; the lines not written are counted in
// the next one, so a flood cannot fill the disk and nothing goes unseen.
const (
	refusalBurst = 10
	refusalEvery = time.Second
)

// refusals rate-limits the warn lines of refused requests and
// connections, per reason (reasons are a fixed set of Envoy's details).
type refusals struct {
	mu sync.Mutex
	m  map[string]*refusalBucket
	// now is the clock (tests set it).
	now func() time.Time
}

type refusalBucket struct {
	tokens     float64
	last       time.Time
	suppressed int
}

// note writes the warn line unless the reason's bucket is empty.
func (r *refusals) note(p *Proxy, reason, msg string, args ...any) {
	r.mu.Lock()
	if r.m == nil {
		r.m = map[string]*refusalBucket{}
	}
	now := time.Now()
	if r.now != nil {
		now = r.now()
	}
	b := r.m[reason]
	if b == nil {
		b = &refusalBucket{tokens: refusalBurst, last: now}
		r.m[reason] = b
	}
	b.tokens = min(refusalBurst, b.tokens+float64(now.Sub(b.last))/float64(refusalEvery))
	b.last = now
	if b.tokens < 1 {
		b.suppressed++
		r.mu.Unlock()
		return
	}
	b.tokens--
	suppressed := b.suppressed
	b.suppressed = 0
	r.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed_since_last_line", suppressed)
	}
	p.log.Warn(msg, append([]any{"reason", reason}, args...)...)
}

// ---- Connections (TCP proxy and listener).

// connLog describes a connection for its access log line and refusal.
type connLog struct {
	start            time.Time
	listener         string
	downstreamLocal  string
	downstreamRemote string
	sni              string
	ids              []string
}

// logConn writes a connection's line with logs, and the warn line when
// it was refused (details set, flags or not).
func (p *Proxy) logConn(logs []*accessLogSpec, c *connLog, flags respFlags, details, cluster, upstream string, in, out int64, refused bool) {
	if len(logs) > 0 {
		p.writeLogs(logs, &logEntry{
			start: c.start, flags: flags, termination: details, bytesIn: in, bytesOut: out,
			duration: time.Since(c.start), reqDuration: -1, respDuration: -1,
			upstreamCluster: cluster, upstreamHost: upstream, downstreamLocal: c.downstreamLocal,
			downstreamRemote: c.downstreamRemote, peerIDs: c.ids, sni: c.sni,
		})
	}
	if refused {
		p.refusals.note(p, details, "connection refused", "listener", c.listener, "flags", flags.String(),
			"remote", c.downstreamRemote, "local", c.downstreamLocal, "sni", c.sni, "peer", strings.Join(c.ids, ","), "cluster", cluster)
	}
}

// streamLog is what a stream records for its access log line.
type streamLog struct {
	flags   respFlags
	details string
	// localCode is the status of the proxy's own answer (0: none).
	localCode int
	upHost    netip.AddrPort
}

func addrString(a netip.AddrPort) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// edgeRefused logs a request or connection the edge refused below
// net/http (edge.go): ambiguous HTTP/1 framing (answered 400) or HTTP/2
// abuse (GOAWAY).
func (hc *httpConn) edgeRefused(reason string) {
	p := hc.p
	e := &logEntry{
		start: time.Now(), flags: flagDPE, details: reason, reqDuration: -1, respDuration: -1,
		downstreamLocal: addrString(hc.dst), downstreamRemote: hc.remote, peerIDs: hc.ids, localURI: hc.localURI, sni: hc.sni,
	}
	msg := "HTTP/2 connection cut: protocol abuse"
	if !strings.HasPrefix(reason, "h2_") {
		msg = "HTTP/1 request refused: ambiguous framing"
		e.code, e.protocol = http.StatusBadRequest, "HTTP/1.1"
	}
	if logs := hc.chain.http.logs; len(logs) > 0 {
		p.writeLogs(logs, e)
	}
	p.refusals.note(p, reason, msg, "listener", hc.rl.name, "remote", hc.remote, "peer", strings.Join(hc.ids, ","))
}

// tcpResult is how a TCP proxy connection ended, for its line.
type tcpResult struct {
	flags             respFlags
	details           string
	cluster, upstream string
	in, out           int64
}

// logsOf is a TCP proxy's access loggers (none for nil).
func (tp *tcpProxySpec) logsOf() []*accessLogSpec {
	if tp == nil {
		return nil
	}
	return tp.logs
}
