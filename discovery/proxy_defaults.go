package discovery

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
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
		if err := CheckLogFormat(a.TextFormat); err != nil {
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
			if err := CheckLogFormat(v); err != nil {
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

// LogOperators are the Envoy command operators vmesh's proxy writes (the
// proxy's own list is checked against this one by a test). Those marked
// with "(" take an argument.
var LogOperators = []string{
	"START_TIME", "START_TIME(", "PROTOCOL", "RESPONSE_CODE", "RESPONSE_CODE_DETAILS", "RESPONSE_FLAGS",
	"RESPONSE_FLAGS_LONG", "CONNECTION_TERMINATION_DETAILS", "BYTES_RECEIVED", "BYTES_SENT", "DURATION",
	"REQUEST_DURATION", "RESPONSE_DURATION", "UPSTREAM_HOST", "UPSTREAM_CLUSTER", "UPSTREAM_LOCAL_ADDRESS",
	"UPSTREAM_TRANSPORT_FAILURE_REASON", "DOWNSTREAM_LOCAL_ADDRESS", "DOWNSTREAM_REMOTE_ADDRESS",
	"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", "DOWNSTREAM_PEER_URI_SAN", "DOWNSTREAM_LOCAL_URI_SAN",
	"REQUESTED_SERVER_NAME", "ROUTE_NAME", "TRACE_ID", "HOSTNAME", "REQ(", "RESP(", "TRAILER(",
}

// CheckLogFormat checks the syntax of an Envoy format string: every %
// starts an operator from LogOperators closed by another % (%% is a
// literal %), and an operator with an argument has it in parentheses,
// optionally followed by :N (a maximum length).
func CheckLogFormat(s string) error {
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			continue
		}
		j := operatorEnd(s[i+1:])
		if j < 0 {
			return fmt.Errorf("unclosed command operator at byte %d: %q", i, s[i:])
		}
		op := s[i+1 : i+1+j]
		i += j + 1
		if op == "" {
			continue // %%
		}
		name, arg, hasArg := strings.Cut(op, "(")
		if !hasArg {
			if !slices.Contains(LogOperators, name) {
				return fmt.Errorf("unknown command operator %%%s%%", op)
			}
			continue
		}
		if !slices.Contains(LogOperators, name+"(") {
			return fmt.Errorf("command operator %%%s%% takes no argument or is unknown", op)
		}
		end := strings.LastIndexByte(arg, ')')
		if end < 0 {
			return fmt.Errorf("command operator %%%s%%: missing )", op)
		}
		if name != "START_TIME" && strings.TrimSpace(arg[:end]) == "" {
			return fmt.Errorf("command operator %%%s%%: missing the header name", op)
		}
		if rest := arg[end+1:]; rest != "" {
			n, ok := strings.CutPrefix(rest, ":")
			if !ok || n == "" || strings.Trim(n, "0123456789") != "" {
				return fmt.Errorf("command operator %%%s%%: after ) only :N (a maximum length) may follow", op)
			}
		}
	}
	return nil
}

// operatorEnd is the index of the % that closes the operator s starts
// with (after its opening %), -1 if none: the next % for an operator
// without argument, else the first ")%" or ")":N"%" after the "(", so an
// argument may hold % (START_TIME's format).
func operatorEnd(s string) int {
	i := 0
	for i < len(s) && (s[i] == '_' || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9')) {
		i++
	}
	if i >= len(s) || s[i] != '(' {
		return strings.IndexByte(s, '%')
	}
	for j := i; j < len(s); j++ {
		if s[j] != ')' {
			continue
		}
		k := j + 1
		if k < len(s) && s[k] == ':' {
			k++
			for k < len(s) && s[k] >= '0' && s[k] <= '9' {
				k++
			}
		}
		if k < len(s) && s[k] == '%' {
			return k
		}
	}
	return strings.IndexByte(s, '%')
}
