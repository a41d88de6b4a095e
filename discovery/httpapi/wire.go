package httpapi

import (
	"maps"
	"time"

	"github.com/vmesh/vmesh/discovery"
)

// The types in this file are the JSON shapes of Consul's HTTP API, so that
// github.com/hashicorp/consul/api and every tool built on it decode what we
// send and what they send decodes here. Fields that Consul accepts and we do
// not support yet are decoded (so strict decoding does not reject a stock
// client) and refused when set.

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
	TaggedAddresses   map[string]discovery.ServiceAddress `json:",omitempty"`
	Weights           wireWeights
	EnableTagOverride bool
	CreateIndex       uint64
	ModifyIndex       uint64
	Datacenter        string
	Locality          *discovery.Locality `json:",omitempty"`
	// Proxy is a proxy or gateway record's Proxy block, as registered.
	Proxy *discovery.ConnectProxyConfig `json:",omitempty"`
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
	ServiceTaggedAddresses   map[string]discovery.ServiceAddress `json:",omitempty"`
	ServiceWeights           wireWeights
	ServiceEnableTagOverride bool
	ServiceLocality          *discovery.Locality           `json:",omitempty"`
	ServiceKind              string                        `json:",omitempty"`
	ServiceProxy             *discovery.ConnectProxyConfig `json:",omitempty"`
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

func toAgentService(in *discovery.Instance, dc string) *agentService {
	return &agentService{
		ID: in.ID, Service: in.Service, Tags: nonNil(in.Tags), Meta: nonNilMap(in.Meta),
		Port: in.Port, Address: in.Address, TaggedAddresses: in.TaggedAddresses,
		Weights:           wireWeights{Passing: in.Weights.Passing, Warning: in.Weights.Warning},
		EnableTagOverride: in.EnableTagOverride, CreateIndex: in.CreateIndex, ModifyIndex: in.ModifyIndex,
		Datacenter: dc, Locality: in.Locality, Kind: in.Kind, Proxy: in.Proxy,
	}
}

func nonNilMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func toHealthCheck(c *discovery.Check) *healthCheck {
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

func toHealthChecks(cs []*discovery.Check) []*healthCheck {
	out := make([]*healthCheck, 0, len(cs))
	for _, c := range cs {
		out = append(out, toHealthCheck(c))
	}
	return out
}

func toWireNode(n *discovery.Node) *wireNode {
	if n == nil {
		return nil
	}
	return &wireNode{
		ID: n.ID, Node: n.Name, Address: n.Address, Datacenter: n.Datacenter,
		TaggedAddresses: nodeTaggedAddresses(n),
		Meta:            nonNilMap(n.Meta), CreateIndex: n.CreateIndex, ModifyIndex: n.ModifyIndex,
	}
}

// nodeTaggedAddresses are a node's tagged addresses: those a catalog
// registration gave, else its Address as lan and wan.
func nodeTaggedAddresses(n *discovery.Node) map[string]string {
	if len(n.TaggedAddresses) > 0 {
		return maps.Clone(n.TaggedAddresses)
	}
	return map[string]string{"lan": n.Address, "wan": n.Address}
}
