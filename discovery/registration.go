package discovery

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// ServiceRegistration is the body of PUT /v1/agent/service/register and
// the shape of a service in a service definition file (Consul's
// AgentServiceRegistration and its file format, one struct for both). The
// hcl tags are the keys a file may use; a field without one is an unknown
// key in a file, as the API's fields vmesh refuses anyway are.
type ServiceRegistration struct {
	Kind              string   `hcl:"kind"`
	ID                string   `hcl:"id"`
	Name              string   `hcl:"name"`
	Tags              []string `hcl:"tags"`
	Port              int      `hcl:"port"`
	Ports             json.RawMessage
	Address           string `hcl:"address"`
	SocketPath        string
	TaggedAddresses   map[string]ServiceAddress
	EnableTagOverride bool              `hcl:"enable_tag_override"`
	Meta              map[string]string `hcl:"meta"`
	Weights           *Weights          `hcl:"weights"`
	Check             *CheckType        `hcl:"check"`
	Checks            []*CheckType      `hcl:"checks"`
	// Proxy has no file key: a file's proxy block lives in
	// connect.sidecar_service, and a top-level one stays an unknown key.
	Proxy     *ConnectProxyConfig
	Connect   *ServiceConnect `hcl:"connect"`
	AI        json.RawMessage
	Namespace string
	Partition string
	Locality  json.RawMessage

	// File-only keys: the API carries protocol and user in Meta, and a
	// body naming these is refused as it always was.

	// Line is where the definition starts in its file, for messages.
	Line int `hcl:",line" json:"-"`
	// Token is accepted for Consul's file format and not used.
	Token string `hcl:"token" json:"-"`
	// Protocol is tcp (default), http, http2, grpc or udp; ForAPI moves
	// it to Meta.protocol.
	Protocol string `hcl:"protocol" json:"-"`
	// User is the Unix user (name or UID) the service's app runs as on
	// this host: its captured outbound connections leave with the
	// service's identity (docs/capture.md). ForAPI moves it to
	// Meta["vmesh-user"].
	User string `hcl:"user" json:"-"`
}

// ForAPI returns the registration as the HTTP API takes it: the file-only
// protocol and user moved into Meta (unless Meta already names them), in a
// copy of Meta, so the definition stays as its file wrote it (a reload
// compares it).
func (reg *ServiceRegistration) ForAPI() *ServiceRegistration {
	out := *reg
	out.Line, out.Token, out.Protocol, out.User = 0, "", "", ""
	copied := false
	for _, kv := range [][2]string{{MetaProtocol, reg.Protocol}, {MetaUser, reg.User}} {
		if kv[1] == "" || reg.Meta[kv[0]] != "" {
			continue
		}
		if !copied {
			copied = true
			out.Meta = make(map[string]string, len(reg.Meta)+2)
			for k, v := range reg.Meta {
				out.Meta[k] = v
			}
		}
		out.Meta[kv[0]] = kv[1]
	}
	return &out
}

// CheckType is a check as a registration carries it (Consul's
// AgentServiceCheck, plus the fields of AgentCheckRegistration), in the
// API and in a file (the hcl tags are the keys a file may use).
type CheckType struct {
	CheckID                        string `hcl:"check_id"`
	ID                             string `hcl:"id"`
	Name                           string `hcl:"name"`
	Notes                          string `hcl:"notes"`
	ServiceID                      string
	ScriptArgs                     []string `hcl:"script_args"`
	Args                           []string `hcl:"args"`
	DockerContainerID              string
	Shell                          string
	Interval                       Duration            `hcl:"interval"`
	Timeout                        Duration            `hcl:"timeout"`
	TTL                            Duration            `hcl:"ttl"`
	HTTP                           string              `hcl:"http"`
	Header                         map[string][]string `hcl:"header"`
	Method                         string              `hcl:"method"`
	Body                           string              `hcl:"body"`
	TCP                            string              `hcl:"tcp"`
	TCPUseTLS                      bool
	UDP                            string
	Status                         string `hcl:"status"`
	TLSServerName                  string `hcl:"tls_server_name"`
	TLSSkipVerify                  bool   `hcl:"tls_skip_verify"`
	GRPC                           string `hcl:"grpc"`
	GRPCUseTLS                     bool   `hcl:"grpc_use_tls"`
	H2PING                         string
	H2PingUseTLS                   bool
	AliasNode                      string
	AliasService                   string
	SuccessBeforePassing           int
	FailuresBeforeWarning          int
	FailuresBeforeCritical         int
	DeregisterCriticalServiceAfter Duration `hcl:"deregister_critical_service_after"`
	Namespace                      string
	Partition                      string
}

// Duration decodes Consul's durations: a Go duration string ("10s") or a
// number of nanoseconds.
type Duration time.Duration

func (d *Duration) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		s, err := strconv.Unquote(string(b))
		if err != nil {
			return err
		}
		if s == "" {
			*d = 0
			return nil
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			// A type error gets the field's name filled in by encoding/json.
			return &json.UnmarshalTypeError{Value: strconv.Quote(s), Type: reflect.TypeFor[Duration]()}
		}
		*d = Duration(v)
		return nil
	}
	v, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return &json.UnmarshalTypeError{Value: string(b), Type: reflect.TypeFor[Duration]()}
	}
	*d = Duration(v)
	return nil
}

// UnmarshalText takes a Go duration string, so that config file decoders
// that know encoding.TextUnmarshaler read "10s".
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// Output shapes.

// DecodeError turns an encoding/json error into a message that names the
// field and says what it wanted, in Consul's words, so that every decoder
// of Consul's JSON shapes (the API's bodies, config entries, intentions)
// refuses bad input alike.
func DecodeError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		want := te.Type.String()
		switch te.Type {
		case reflect.TypeFor[Duration]():
			want = `a duration such as "10s"`
		case reflect.TypeFor[int](), reflect.TypeFor[uint64](), reflect.TypeFor[uint32](), reflect.TypeFor[float32]():
			want = "a number"
		case reflect.TypeFor[string]():
			want = "a string"
		}
		if te.Type == reflect.TypeFor[Duration]() {
			//lint:ignore ST1005 Consul's own wording ("invalid duration"), which its clients match
			return fmt.Errorf("Request decode failed: field %s: invalid duration %s: expected %s", te.Field, te.Value, want)
		}
		//lint:ignore ST1005 Consul's own wording, which its clients show as is
		return fmt.Errorf("Request decode failed: field %s: expected %s, got %s", te.Field, want, te.Value)
	}
	if errors.Is(err, io.EOF) {
		//lint:ignore ST1005 Consul's own wording
		return errors.New("Request decode failed: empty body")
	}
	//lint:ignore ST1005 Consul's own wording
	return fmt.Errorf("Request decode failed: %v", strings.TrimPrefix(err.Error(), "json: "))
}
