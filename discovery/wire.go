package discovery

import (
	"encoding/json"
	"reflect"
	"strconv"
	"time"
)

// The types in this file are the JSON shapes of Consul's HTTP API, so that
// github.com/hashicorp/consul/api and every tool built on it decode what we
// send and what they send decodes here. Fields that Consul accepts and we do
// not support yet are decoded (so strict decoding does not reject a stock
// client) and refused when set.

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

type wireWeights struct {
	Passing int
	Warning int
}

type agentService struct {
	Kind              string `json:",omitempty"`
	ID                string
	Service           string
	Tags              []string
	Meta              map[string]string
	Port              int
	Address           string
	Weights           wireWeights
	EnableTagOverride bool
	CreateIndex       uint64
	ModifyIndex       uint64
	Datacenter        string
}

type healthCheckDefinition struct {
	HTTP                           string              `json:",omitempty"`
	Header                         map[string][]string `json:",omitempty"`
	Method                         string              `json:",omitempty"`
	Body                           string              `json:",omitempty"`
	TLSServerName                  string              `json:",omitempty"`
	TLSSkipVerify                  bool                `json:",omitempty"`
	TCP                            string              `json:",omitempty"`
	GRPC                           string              `json:",omitempty"`
	GRPCUseTLS                     bool                `json:",omitempty"`
	IntervalDuration               time.Duration       `json:",omitempty"`
	TimeoutDuration                time.Duration       `json:",omitempty"`
	DeregisterCriticalServiceAfter time.Duration       `json:",omitempty"`
	Interval                       string              `json:",omitempty"`
	Timeout                        string              `json:",omitempty"`
	TTL                            string              `json:",omitempty"`
}

type healthCheck struct {
	Node        string
	CheckID     string
	Name        string
	Status      string
	Notes       string
	Output      string
	ServiceID   string
	ServiceName string
	ServiceTags []string
	Type        string
	ExposedPort int
	Definition  healthCheckDefinition
	CreateIndex uint64
	ModifyIndex uint64
}

type wireNode struct {
	ID              string
	Node            string
	Address         string
	Datacenter      string
	TaggedAddresses map[string]string
	Meta            map[string]string
	CreateIndex     uint64
	ModifyIndex     uint64
}

type catalogService struct {
	ID                       string
	Node                     string
	Address                  string
	Datacenter               string
	TaggedAddresses          map[string]string
	NodeMeta                 map[string]string
	ServiceID                string
	ServiceName              string
	ServiceAddress           string
	ServiceTags              []string
	ServiceMeta              map[string]string
	ServicePort              int
	ServiceWeights           wireWeights
	ServiceEnableTagOverride bool
	CreateIndex              uint64
	ModifyIndex              uint64
}

type serviceEntry struct {
	Node    *wireNode
	Service *agentService
	Checks  []*healthCheck
}

type kvPair struct {
	Key         string
	CreateIndex uint64
	ModifyIndex uint64
	LockIndex   uint64
	Flags       uint64
	Value       []byte
	Session     string `json:",omitempty"`
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func toAgentService(in *Instance, dc string) *agentService {
	return &agentService{
		ID: in.ID, Service: in.Service, Tags: nonNil(in.Tags), Meta: nonNilMap(in.Meta),
		Port: in.Port, Address: in.Address,
		Weights:           wireWeights{Passing: in.Weights.Passing, Warning: in.Weights.Warning},
		EnableTagOverride: in.EnableTagOverride, CreateIndex: in.CreateIndex, ModifyIndex: in.ModifyIndex,
		Datacenter: dc,
	}
}

func nonNilMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func toHealthCheck(c *Check) *healthCheck {
	d := c.Definition
	def := healthCheckDefinition{
		HTTP: d.HTTP, Header: d.Header, Method: d.Method, Body: d.Body, TLSServerName: d.TLSServerName,
		TLSSkipVerify: d.TLSSkipVerify, TCP: d.TCP, GRPC: d.GRPC, GRPCUseTLS: d.GRPCUseTLS,
		IntervalDuration: d.Interval, TimeoutDuration: d.Timeout,
		DeregisterCriticalServiceAfter: d.DeregisterCriticalServiceAfter,
	}
	if d.Interval > 0 {
		def.Interval = d.Interval.String()
	}
	if d.Timeout > 0 {
		def.Timeout = d.Timeout.String()
	}
	if d.TTL > 0 {
		def.TTL = d.TTL.String()
	}
	return &healthCheck{
		Node: c.Node, CheckID: c.CheckID, Name: c.Name, Status: c.Status, Notes: c.Notes, Output: c.Output,
		ServiceID: c.ServiceID, ServiceName: c.ServiceName, ServiceTags: nonNil(c.ServiceTags), Type: c.Type,
		Definition: def, CreateIndex: c.CreateIndex, ModifyIndex: c.ModifyIndex,
	}
}

func toHealthChecks(cs []*Check) []*healthCheck {
	out := make([]*healthCheck, 0, len(cs))
	for _, c := range cs {
		out = append(out, toHealthCheck(c))
	}
	return out
}

func toWireNode(n *Node) *wireNode {
	if n == nil {
		return nil
	}
	return &wireNode{
		ID: n.ID, Node: n.Name, Address: n.Address, Datacenter: n.Datacenter,
		TaggedAddresses: map[string]string{"lan": n.Address, "wan": n.Address},
		Meta:            nonNilMap(n.Meta), CreateIndex: n.CreateIndex, ModifyIndex: n.ModifyIndex,
	}
}
