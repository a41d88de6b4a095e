package xds

import (
	"encoding/json"

	accesslog "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	fileal "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	streamal "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"github.com/vmesh/vmesh/discovery"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Access logs, from proxy-defaults' AccessLogs, the way Consul configures
// Envoy: an access logger (envoy.access_loggers.file, .stdout or .stderr)
// on every HTTP connection manager and TCP proxy, and, unless
// DisableListenerLogs, on every listener for the connections refused
// before a filter chain took them. The format is always sent (Consul's
// default JSON when none is set), so every proxy writes the same fields.
// Proxyless gRPC's API listeners and UDP listeners get none: there is no
// proxy to write them.

// Access logger names, as Envoy registers them.
const (
	stdoutAccessLog = "envoy.access_loggers.stdout"
	stderrAccessLog = "envoy.access_loggers.stderr"
	// listenerAccessLog names the listener-level logger, as Consul does.
	listenerAccessLog = "Consul Listener Filter Log"
)

// DefaultAccessLogJSON is the format used when AccessLogs sets none:
// Consul's default (Envoy's command operators), with the W3C trace ID
// and the downstream peer's SPIFFE ID added.
var DefaultAccessLogJSON = map[string]string{
	"start_time":                        "%START_TIME%",
	"route_name":                        "%ROUTE_NAME%",
	"method":                            "%REQ(:METHOD)%",
	"path":                              "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
	"protocol":                          "%PROTOCOL%",
	"response_code":                     "%RESPONSE_CODE%",
	"response_flags":                    "%RESPONSE_FLAGS%",
	"response_code_details":             "%RESPONSE_CODE_DETAILS%",
	"connection_termination_details":    "%CONNECTION_TERMINATION_DETAILS%",
	"bytes_received":                    "%BYTES_RECEIVED%",
	"bytes_sent":                        "%BYTES_SENT%",
	"duration":                          "%DURATION%",
	"x_forwarded_for":                   "%REQ(X-FORWARDED-FOR)%",
	"user_agent":                        "%REQ(USER-AGENT)%",
	"request_id":                        "%REQ(X-REQUEST-ID)%",
	"authority":                         "%REQ(:AUTHORITY)%",
	"upstream_host":                     "%UPSTREAM_HOST%",
	"upstream_cluster":                  "%UPSTREAM_CLUSTER%",
	"downstream_local_address":          "%DOWNSTREAM_LOCAL_ADDRESS%",
	"downstream_remote_address":         "%DOWNSTREAM_REMOTE_ADDRESS%",
	"downstream_peer_uri_san":           "%DOWNSTREAM_PEER_URI_SAN%",
	"requested_server_name":             "%REQUESTED_SERVER_NAME%",
	"upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
	"trace_id":                          "%TRACE_ID%",
}

// addAccessLogs adds the access loggers to every listener built, when
// proxy-defaults enables them.
func (b *builder) addAccessLogs() {
	cfg := b.v.accessLogs
	if cfg == nil || !cfg.Enabled || b.err != nil {
		return
	}
	filterLog := b.accessLog(cfg, wellknown.FileAccessLog)
	listenerLog := (*accesslog.AccessLog)(nil)
	if !cfg.DisableListenerLogs {
		listenerLog = b.accessLog(cfg, listenerAccessLog)
	}
	if b.err != nil {
		return
	}
	for _, r := range b.listeners {
		l := r.(*listener.Listener)
		if l.GetApiListener() != nil || l.GetUdpListenerConfig() != nil {
			continue
		}
		if listenerLog != nil {
			l.AccessLog = []*accesslog.AccessLog{listenerLog}
		}
		chains := l.FilterChains
		if l.DefaultFilterChain != nil {
			chains = append(chains[:len(chains):len(chains)], l.DefaultFilterChain)
		}
		for _, fc := range chains {
			for _, f := range fc.Filters {
				b.logFilter(f, filterLog)
			}
		}
	}
}

// logFilter adds the access logger to an HTTP connection manager or TCP
// proxy filter.
func (b *builder) logFilter(f *listener.Filter, al *accesslog.AccessLog) {
	var m proto.Message
	switch f.GetTypedConfig().GetTypeUrl() {
	case "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager":
		h := &hcm.HttpConnectionManager{}
		if err := f.GetTypedConfig().UnmarshalTo(h); err != nil {
			b.fail(err)
			return
		}
		h.AccessLog = []*accesslog.AccessLog{al}
		m = h
	case "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy":
		t := &tcp.TcpProxy{}
		if err := f.GetTypedConfig().UnmarshalTo(t); err != nil {
			b.fail(err)
			return
		}
		t.AccessLog = []*accesslog.AccessLog{al}
		m = t
	default:
		return
	}
	f.ConfigType = &listener.Filter_TypedConfig{TypedConfig: b.any(m)}
}

// accessLog is one access logger for cfg, named name (the file logger's
// name is replaced by the stdout or stderr one for those types).
func (b *builder) accessLog(cfg *discovery.AccessLogs, name string) *accesslog.AccessLog {
	format, err := logFormat(cfg)
	if err != nil {
		b.fail(err)
		return nil
	}
	var typed *anypb.Any
	switch cfg.Type {
	case discovery.AccessLogFile:
		typed = b.any(&fileal.FileAccessLog{Path: cfg.Path, AccessLogFormat: &fileal.FileAccessLog_LogFormat{LogFormat: format}})
	case discovery.AccessLogStderr:
		if name == wellknown.FileAccessLog {
			name = stderrAccessLog
		}
		typed = b.any(&streamal.StderrAccessLog{AccessLogFormat: &streamal.StderrAccessLog_LogFormat{LogFormat: format}})
	default:
		if name == wellknown.FileAccessLog {
			name = stdoutAccessLog
		}
		typed = b.any(&streamal.StdoutAccessLog{AccessLogFormat: &streamal.StdoutAccessLog_LogFormat{LogFormat: format}})
	}
	return &accesslog.AccessLog{Name: name, ConfigType: &accesslog.AccessLog_TypedConfig{TypedConfig: typed}}
}

// logFormat is the substitution format of cfg: its text format, its JSON
// format, or the default JSON one. A text format ends with a newline, as
// Envoy's default does, unless it has one.
func logFormat(cfg *discovery.AccessLogs) (*core.SubstitutionFormatString, error) {
	if cfg.TextFormat != "" {
		text := cfg.TextFormat
		if text[len(text)-1] != '\n' {
			text += "\n"
		}
		return &core.SubstitutionFormatString{Format: &core.SubstitutionFormatString_TextFormatSource{
			TextFormatSource: &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: text}},
		}}, nil
	}
	var obj map[string]any
	if cfg.JSONFormat != "" {
		if err := json.Unmarshal([]byte(cfg.JSONFormat), &obj); err != nil {
			return nil, err
		}
	} else {
		obj = map[string]any{}
		for k, v := range DefaultAccessLogJSON {
			obj[k] = v
		}
	}
	st, err := structpb.NewStruct(obj)
	if err != nil {
		return nil, err
	}
	return &core.SubstitutionFormatString{Format: &core.SubstitutionFormatString_JsonFormat{JsonFormat: st}}, nil
}
