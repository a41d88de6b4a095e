package proxy

import (
	"fmt"
	"strings"
	"time"

	httprbac "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerfilter "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpopts "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// HTTP connection managers, parsed: every field honoured or refused, like
// the rest of the listener.

// Envoy's defaults for an HTTP connection manager.
const (
	// defaultHTTPIdleTimeout closes a downstream connection without
	// streams (common_http_protocol_options.idle_timeout).
	defaultHTTPIdleTimeout = time.Hour
	// defaultStreamIdleTimeout ends a stream without activity
	// (stream_idle_timeout; a route's idle_timeout overrides it).
	defaultStreamIdleTimeout = 5 * time.Minute
)

// xfccMode is forward_client_cert_details: what happens to an incoming
// x-forwarded-client-cert header.
type xfccMode int

const (
	xfccSanitize          xfccMode = iota // removed
	xfccForwardOnly                       // kept on mTLS connections, else removed
	xfccAppendForward                     // mTLS: the current peer appended; else removed
	xfccSanitizeSet                       // mTLS: replaced by the current peer; else removed
	xfccAlwaysForwardOnly                 // kept
)

// hcmSpec is an HTTP connection manager: where its routes come from, the
// HTTP filters before the router, and the connection's HTTP settings.
type hcmSpec struct {
	stat string
	// rds names the RouteConfiguration (over ADS); inline is set instead
	// for a route_config in the listener.
	rds    string
	inline *routeConfigSpec
	// rbac is the HTTP RBAC filter (nil: none).
	rbac *rbacSpec
	// websocket: upgrade_configs allow "websocket" upgrades.
	websocket bool
	xfcc      xfccMode
	// xfccURI: set_current_client_cert_details.uri.
	xfccURI bool
	// idleTimeout closes a connection without streams (0: never).
	idleTimeout time.Duration
	// streamIdle ends a stream without activity (0: never), unless the
	// route sets its own.
	streamIdle time.Duration
	// paths: normalize_path, merge_slashes and
	// path_with_escaped_slashes_action (path.go).
	paths pathNorm
	// logs are the access loggers (accesslog.go).
	logs []*accessLogSpec
}

func parseHCM(h *hcm.HttpConnectionManager, path string) (*hcmSpec, error) {
	if err := onlyFields(h, path, "codec_type", "stat_prefix", "rds", "route_config", "http_filters", "upgrade_configs",
		"forward_client_cert_details", "set_current_client_cert_details", "common_http_protocol_options", "stream_idle_timeout",
		"normalize_path", "merge_slashes", "path_with_escaped_slashes_action", "access_log"); err != nil {
		return nil, err
	}
	if h.GetCodecType() != hcm.HttpConnectionManager_AUTO {
		return nil, fmt.Errorf("%w: %s.codec_type %s (only AUTO)", ErrUnsupported, path, h.GetCodecType())
	}
	s := &hcmSpec{stat: h.GetStatPrefix(), idleTimeout: defaultHTTPIdleTimeout, streamIdle: defaultStreamIdleTimeout}
	var err error
	if s.logs, err = parseAccessLogs(h.GetAccessLog(), path); err != nil {
		return nil, err
	}
	switch {
	case h.GetRds() != nil:
		r := h.GetRds()
		rp := path + ".rds"
		if err := onlyFields(r, rp, "config_source", "route_config_name"); err != nil {
			return nil, err
		}
		if src := r.GetConfigSource(); src == nil || src.GetAds() == nil {
			return nil, fmt.Errorf("%w: %s.config_source: route configurations come over ADS only", ErrUnsupported, rp)
		}
		if r.GetRouteConfigName() == "" {
			return nil, fmt.Errorf("%w: %s.route_config_name is empty", ErrInvalid, rp)
		}
		s.rds = r.GetRouteConfigName()
	case h.GetRouteConfig() != nil:
		rc, err := parseRouteConfig(h.GetRouteConfig(), path+".route_config")
		if err != nil {
			return nil, err
		}
		s.inline = rc
	default:
		return nil, fmt.Errorf("%w: %s has neither rds nor route_config", ErrInvalid, path)
	}
	filters := h.GetHttpFilters()
	for i, f := range filters {
		fp := fmt.Sprintf("%s.http_filters[%d]", path, i)
		if err := onlyFields(f, fp, "name", "typed_config"); err != nil {
			return nil, err
		}
		last := i == len(filters)-1
		switch f.GetTypedConfig().GetTypeUrl() {
		case "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC":
			if last || s.rbac != nil {
				return nil, fmt.Errorf("%w: %s: rbac must come once, before the router", ErrInvalid, fp)
			}
			var r httprbac.RBAC
			if err := unpack(f.GetTypedConfig(), &r, fp); err != nil {
				return nil, err
			}
			rs, err := parseHTTPRBAC(&r, fp+" rbac")
			if err != nil {
				return nil, err
			}
			s.rbac = rs
		case "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router":
			if !last {
				return nil, fmt.Errorf("%w: %s: the router is the terminal HTTP filter and must come last", ErrInvalid, fp)
			}
			var r routerfilter.Router
			if err := unpack(f.GetTypedConfig(), &r, fp); err != nil {
				return nil, err
			}
			if err := onlyFields(&r, fp+" router"); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("%w: %s: HTTP filter %q (%s)", ErrUnsupported, fp, f.GetName(), f.GetTypedConfig().GetTypeUrl())
		}
	}
	if len(filters) == 0 || filters[len(filters)-1].GetTypedConfig().GetTypeUrl() != "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" {
		return nil, fmt.Errorf("%w: %s.http_filters: the last HTTP filter must be the router", ErrInvalid, path)
	}
	for i, u := range h.GetUpgradeConfigs() {
		up := fmt.Sprintf("%s.upgrade_configs[%d]", path, i)
		if err := onlyFields(u, up, "upgrade_type", "enabled"); err != nil {
			return nil, err
		}
		if !strings.EqualFold(u.GetUpgradeType(), "websocket") {
			return nil, fmt.Errorf("%w: %s.upgrade_type %q (only websocket)", ErrUnsupported, up, u.GetUpgradeType())
		}
		s.websocket = u.GetEnabled() == nil || u.GetEnabled().GetValue()
	}
	switch d := h.GetForwardClientCertDetails(); d {
	case hcm.HttpConnectionManager_SANITIZE:
		s.xfcc = xfccSanitize
	case hcm.HttpConnectionManager_FORWARD_ONLY:
		s.xfcc = xfccForwardOnly
	case hcm.HttpConnectionManager_APPEND_FORWARD:
		s.xfcc = xfccAppendForward
	case hcm.HttpConnectionManager_SANITIZE_SET:
		s.xfcc = xfccSanitizeSet
	case hcm.HttpConnectionManager_ALWAYS_FORWARD_ONLY:
		s.xfcc = xfccAlwaysForwardOnly
	default:
		return nil, fmt.Errorf("%w: %s.forward_client_cert_details %s", ErrUnsupported, path, d)
	}
	if d := h.GetSetCurrentClientCertDetails(); d != nil {
		if err := onlyFields(d, path+".set_current_client_cert_details", "uri"); err != nil {
			return nil, err
		}
		s.xfccURI = d.GetUri()
	}
	if o := h.GetCommonHttpProtocolOptions(); o != nil {
		if err := onlyFields(o, path+".common_http_protocol_options", "idle_timeout"); err != nil {
			return nil, err
		}
		if d := o.GetIdleTimeout(); d != nil {
			if s.idleTimeout = d.AsDuration(); s.idleTimeout < 0 {
				return nil, fmt.Errorf("%w: %s.common_http_protocol_options.idle_timeout is negative", ErrInvalid, path)
			}
		}
	}
	if d := h.GetStreamIdleTimeout(); d != nil {
		if s.streamIdle = d.AsDuration(); s.streamIdle < 0 {
			return nil, fmt.Errorf("%w: %s.stream_idle_timeout is negative", ErrInvalid, path)
		}
	}
	// Envoy's defaults: off unless set (vmesh's xDS server sets them).
	s.paths.normalize = h.GetNormalizePath().GetValue()
	s.paths.merge = h.GetMergeSlashes()
	switch a := h.GetPathWithEscapedSlashesAction(); a {
	case hcm.HttpConnectionManager_IMPLEMENTATION_SPECIFIC_DEFAULT, hcm.HttpConnectionManager_KEEP_UNCHANGED:
		s.paths.slashes = slashesKeep
	case hcm.HttpConnectionManager_REJECT_REQUEST:
		s.paths.slashes = slashesReject
	case hcm.HttpConnectionManager_UNESCAPE_AND_FORWARD:
		s.paths.slashes = slashesUnescape
	default:
		return nil, fmt.Errorf("%w: %s.path_with_escaped_slashes_action %s (KEEP_UNCHANGED, REJECT_REQUEST or UNESCAPE_AND_FORWARD)", ErrUnsupported, path, a)
	}
	return s, nil
}

// parseHTTPProtocolOptions reads a cluster's
// envoy.extensions.upstreams.http.v3.HttpProtocolOptions: which protocol
// the proxy speaks to the endpoints (true: HTTP/2, with prior knowledge in
// plaintext or over TLS; false: HTTP/1.1).
func parseHTTPProtocolOptions(o *httpopts.HttpProtocolOptions, path string) (http2 bool, err error) {
	if err := onlyFields(o, path, "explicit_http_config"); err != nil {
		return false, err
	}
	e := o.GetExplicitHttpConfig()
	ep := path + ".explicit_http_config"
	if err := onlyFields(e, ep, "http_protocol_options", "http2_protocol_options"); err != nil {
		return false, err
	}
	switch {
	case e.GetHttpProtocolOptions() != nil:
		return false, onlyFields(e.GetHttpProtocolOptions(), ep+".http_protocol_options")
	case e.GetHttp2ProtocolOptions() != nil:
		return true, onlyFields(e.GetHttp2ProtocolOptions(), ep+".http2_protocol_options")
	}
	return false, fmt.Errorf("%w: %s names no protocol", ErrInvalid, ep)
}
