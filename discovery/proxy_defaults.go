package discovery

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/vmesh/vmesh/envoyfmt"
)

// The proxy-defaults config entry: mesh-wide proxy settings, as Consul
// spells them. vmesh supports its AccessLogs block; the xDS translator
// turns it into Envoy access loggers on every listener, HTTP connection
// manager and TCP proxy of every node's proxy, so the in-process proxy and
// an Envoy get the same configuration.

// KindProxyDefaults is the proxy-defaults kind; its one entry is named
// ProxyDefaultsName, as in Consul.
const (
	KindProxyDefaults = "proxy-defaults"
	ProxyDefaultsName = "global"
)

// ProxyDefaults is the body of the proxy-defaults entry.
type ProxyDefaults struct {
	AccessLogs *AccessLogs `json:",omitempty" hcl:"access_logs"`
}

// Access log sink types (Consul's LogSinkType). The empty type is stdout.
const (
	AccessLogFile   = "file"
	AccessLogStdout = "stdout"
	AccessLogStderr = "stderr"
)

// AccessLogs is Consul's AccessLogsConfig: whether the proxies write an
// access log line per request (HTTP) or connection (TCP), where, and in
// what shape (Envoy's JSON format by default; JSONFormat or TextFormat with
// Envoy's command operators such as %RESPONSE_CODE%).
type AccessLogs struct {
	Enabled bool `json:",omitempty" hcl:"enabled"`
	// DisableListenerLogs: no line for connections refused before any
	// filter took them (no filter chain, TLS handshake failure).
	DisableListenerLogs bool   `json:",omitempty" hcl:"disable_listener_logs"`
	Type                string `json:",omitempty" hcl:"type"`
	// Path is absolute; each host's proxy writes it only when it is inside
	// that host's telemetry.access_log_dir (the cluster cannot choose
	// where a host's agent writes).
	Path       string `json:",omitempty" hcl:"path"`
	JSONFormat string `json:",omitempty" hcl:"json_format"`
	TextFormat string `json:",omitempty" hcl:"text_format"`
}

type proxyDefaultsWire struct {
	configEntryHeader
	ProxyDefaults
	Mode                 string          `json:",omitempty"`
	TransparentProxy     json.RawMessage `json:",omitempty"`
	MutualTLSMode        string          `json:",omitempty"`
	Config               json.RawMessage `json:",omitempty"`
	MeshGateway          json.RawMessage `json:",omitempty"`
	Expose               json.RawMessage `json:",omitempty"`
	FailoverPolicy       json.RawMessage `json:",omitempty"`
	PrioritizeByLocality json.RawMessage `json:",omitempty"`
	EnvoyExtensions      json.RawMessage `json:",omitempty"`
}

func validateProxyDefaults(name string, d *ProxyDefaults, bad func(field, format string, args ...any)) {
	if name != ProxyDefaultsName {
		bad("Name", "%q: the proxy-defaults entry is named %q", name, ProxyDefaultsName)
	}
	if d.AccessLogs != nil {
		ValidateAccessLogs("AccessLogs.", d.AccessLogs, bad)
	}
}

// ValidateAccessLogs reports every problem of an AccessLogs block, each
// naming its field under prefix. It checks the settings even when Enabled
// is false, so that turning them on later cannot fail.
func ValidateAccessLogs(prefix string, a *AccessLogs, bad func(field, format string, args ...any)) {
	switch a.Type {
	case "", AccessLogStdout, AccessLogStderr:
		if a.Path != "" {
			bad(prefix+"Path", "applies to Type %q only (Type is %q)", AccessLogFile, a.Type)
		}
	case AccessLogFile:
		if a.Path == "" {
			bad(prefix+"Path", "missing: Type %q needs the path of the log file", AccessLogFile)
		} else if !strings.HasPrefix(a.Path, "/") {
			bad(prefix+"Path", "%q must be an absolute path (inside each host agent's telemetry.access_log_dir, default /var/log/vmesh)", a.Path)
		} else if strings.ContainsAny(a.Path, "\x00\n") {
			bad(prefix+"Path", "must not contain NUL or newline")
		}
	default:
		bad(prefix+"Type", "%q is not one of %s, %s, %s", a.Type, AccessLogFile, AccessLogStdout, AccessLogStderr)
	}
	if a.JSONFormat != "" && a.TextFormat != "" {
		bad(prefix+"JSONFormat", "set at most one of JSONFormat and TextFormat")
	}
	if a.JSONFormat != "" {
		var obj map[string]any
		if err := json.Unmarshal([]byte(a.JSONFormat), &obj); err != nil || obj == nil {
			bad(prefix+"JSONFormat", "must be a JSON object of field names to format strings: %v", jsonErr(err))
		} else {
			checkJSONFormat(prefix+"JSONFormat", obj, bad)
		}
	}
	if a.TextFormat != "" {
		if err := envoyfmt.Check(a.TextFormat); err != nil {
			bad(prefix+"TextFormat", "%v", err)
		}
	}
}

func jsonErr(err error) string {
	if err == nil {
		return "got null"
	}
	return err.Error()
}

// checkJSONFormat checks the values of a json_format: strings with
// command operators, numbers, booleans and nested objects, as Envoy
// takes them.
func checkJSONFormat(field string, obj map[string]any, bad func(field, format string, args ...any)) {
	for k, v := range obj {
		f := fmt.Sprintf("%s[%q]", field, k)
		switch v := v.(type) {
		case string:
			if err := envoyfmt.Check(v); err != nil {
				bad(f, "%v", err)
			}
		case map[string]any:
			checkJSONFormat(f, v, bad)
		case float64, bool:
		default:
			bad(f, "must be a string, a number, a boolean or an object")
		}
	}
}
