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
// the shape of a service in a service definition file.
type ServiceRegistration struct {
	Kind              string
	ID                string
	Name              string
	Tags              []string
	Port              int
	Ports             json.RawMessage
	Address           string
	SocketPath        string
	TaggedAddresses   json.RawMessage
	EnableTagOverride bool
	Meta              map[string]string
	Weights           *Weights
	Check             *CheckType
	Checks            []*CheckType
	Proxy             *ConnectProxyConfig
	Connect           *ServiceConnect
	AI                json.RawMessage
	Namespace         string
	Partition         string
	Locality          json.RawMessage
}

// CheckType is a check as a registration carries it (Consul's
// AgentServiceCheck, plus the fields of AgentCheckRegistration).
type CheckType struct {
	CheckID                        string
	ID                             string
	Name                           string
	Notes                          string
	ServiceID                      string
	ScriptArgs                     []string
	Args                           []string
	DockerContainerID              string
	Shell                          string
	Interval                       Duration
	Timeout                        Duration
	TTL                            Duration
	HTTP                           string
	Header                         map[string][]string
	Method                         string
	Body                           string
	TCP                            string
	TCPUseTLS                      bool
	UDP                            string
	Status                         string
	TLSServerName                  string
	TLSSkipVerify                  bool
	GRPC                           string
	GRPCUseTLS                     bool
	H2PING                         string
	H2PingUseTLS                   bool
	AliasNode                      string
	AliasService                   string
	SuccessBeforePassing           int
	FailuresBeforeWarning          int
	FailuresBeforeCritical         int
	DeregisterCriticalServiceAfter Duration
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
		return fmt.Errorf("Request decode failed: field %s: expected %s, got %s", te.Field, want, te.Value)
	}
	if errors.Is(err, io.EOF) {
		return errors.New("Request decode failed: empty body")
	}
	return fmt.Errorf("Request decode failed: %v", strings.TrimPrefix(err.Error(), "json: "))
}
