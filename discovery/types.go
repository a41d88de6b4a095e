package discovery

import (
	"errors"
	"time"
)

// Health states, as Consul spells them.
const (
	HealthPassing  = "passing"
	HealthWarning  = "warning"
	HealthCritical = "critical"
	HealthAny      = "any"
)

// ValidHealthState reports whether s is one of passing, warning or critical.
func ValidHealthState(s string) bool {
	return s == HealthPassing || s == HealthWarning || s == HealthCritical
}

// Node is a host running a vmesh agent, or an external node that
// /v1/catalog/register wrote (External).
type Node struct {
	ID         string
	Name       string
	Address    string
	Datacenter string
	Meta       map[string]string
	// TaggedAddresses are Consul's extra addresses of the node by tag, as
	// a catalog registration gave them; nil for agents (the API shows
	// Address as lan and wan).
	TaggedAddresses map[string]string `json:",omitempty"`
	// External marks a node no agent runs: /v1/catalog/register made it.
	// Only the catalog endpoints write it; the cluster's liveness check
	// leaves it alone.
	External    bool `json:",omitempty"`
	CreateIndex uint64
	ModifyIndex uint64
}

// Weights are DNS SRV weights for an instance, by health.
type Weights struct {
	Passing int `hcl:"passing"`
	Warning int `hcl:"warning"`
}

// Instance is one registered instance of a service on a node (Consul's
// "service" in a node's service list).
type Instance struct {
	Node    string
	ID      string
	Service string
	Tags    []string
	Address string
	Port    int
	// TaggedAddresses are Consul's extra addresses of the instance by tag
	// ("lan_ipv4", "wan", …), kept and served as registered; vmesh routes
	// by Address and Port. Nil when there are none.
	TaggedAddresses map[string]ServiceAddress `json:",omitempty"`
	// Locality is Consul's region and zone of the instance (nil: none),
	// kept and served; routing does not use it.
	Locality          *Locality `json:",omitempty"`
	Meta              map[string]string
	Weights           Weights
	EnableTagOverride bool
	// Source says who owns the registration: "api" for the HTTP API and the
	// CLI, "file:<path>" for a service definition file. The agent deregisters
	// file-owned instances whose file disappears.
	Source string
	// Protocol is one of Protocols, from Meta["protocol"] (a definition
	// file's protocol lands there too). Empty means the registration did not
	// say: the data plane then follows the service's other instances, or
	// tcp, so one instance registered without it does not turn a whole HTTP
	// service into plain TCP.
	Protocol string
	// Upstreams are the explicit upstreams of the instance's sidecar
	// (Connect.SidecarService.Proxy.Upstreams); the host's proxy listens for
	// each. Nil when there are none.
	Upstreams []Upstream
	// User is the Unix user (name or UID) the instance's app runs as on its
	// node, from Meta["vmesh-user"] (a definition file's user lands there
	// too). Captured connections of that user leave with the service's
	// identity (docs/capture.md). Empty: the app's connections carry the
	// host proxy's identity. Added with per-user capture; entries written
	// before decode with it empty.
	User string
	// UserPort is User's per-user outbound port on the node, chosen by the
	// node's agent when it registered the instance
	// (UserPortAllocator.Assign) and kept while an instance of the user
	// exists (userports.go). 0 without a User, and in entries written
	// before ports were stored: UserPortPolicy.Ports computes one for
	// those.
	UserPort int
	// Kind is Consul's service kind: "" (a typical service) or one of
	// CatalogKinds, from /v1/catalog/register on an external node or an
	// agent's registration (kinds.go). Such a record is inert (Inert):
	// served by the catalog, health and usage endpoints as registered,
	// never a mesh service of its own (no VIP, route, listener or leaf;
	// InMesh).
	Kind string `json:",omitempty"`
	// Proxy is a connect-proxy record's proxy configuration as registered
	// (nil for other kinds), served back and never read by the data plane.
	Proxy *ConnectProxyConfig `json:",omitempty"`
	// ConnectNative marks a typical service on an external node that
	// speaks Connect's mTLS itself (Connect.Native): it is listed among
	// its service's Connect endpoints.
	ConnectNative bool `json:",omitempty"`
	// SidecarFor is, on the connect-proxy record an agent wrote for a
	// registration's Connect.SidecarService, the ID of that service on
	// the same node; the record is written and removed with it
	// (sidecar.go). Empty on every other instance.
	SidecarFor  string `json:",omitempty"`
	CreateIndex uint64
	ModifyIndex uint64
}

// ServiceAddress is one of an instance's tagged addresses.
type ServiceAddress struct {
	Address string
	Port    int
}

// NodeLivenessCheckID is the node-level check the raft leader keeps for
// each node, under Consul's ID and name for it (serfHealth, "Serf Health
// Status"), so tools that look for it (consul/api's test harness, session
// defaults) find it; vmesh sets it from heartbeats, not gossip. Agents do
// not run it, so it is not among /v1/agent/checks; it does count in every
// health result of the node.
const (
	NodeLivenessCheckID   = "serfHealth"
	NodeLivenessCheckName = "Serf Health Status"
	// LegacyNodeLivenessCheckID is what older agents named it; the leader
	// removes such checks.
	LegacyNodeLivenessCheckID = "vmesh:node"
)

// Check kinds.
const (
	CheckHTTP = "http"
	CheckTCP  = "tcp"
	CheckGRPC = "grpc"
	CheckTTL  = "ttl"
	// CheckScript runs ScriptArgs on the agent's host, and CheckDocker in
	// a container; an agent runs them only when its own config enables
	// script checks (ScriptCheckPolicy), never on the API's say-so.
	CheckScript = "script"
	CheckDocker = "docker"
)

// CheckDefinition says how the agent that owns a check runs it. It is kept
// in the catalog so that a restarted agent resumes its checks from raft.
type CheckDefinition struct {
	HTTP          string
	Header        map[string][]string
	Method        string
	Body          string
	TLSServerName string
	TLSSkipVerify bool
	TCP           string
	GRPC          string
	GRPCUseTLS    bool
	TTL           time.Duration
	Interval      time.Duration
	Timeout       time.Duration
	// DeregisterCriticalServiceAfter removes the check's service once the
	// check has been critical this long (0: never).
	DeregisterCriticalServiceAfter time.Duration
	// ScriptArgs is a script check's command and arguments (Consul's
	// Args); with DockerContainerID (and Shell) it runs in that
	// container. Added with script checks; older entries decode empty.
	ScriptArgs        []string `json:",omitempty"`
	DockerContainerID string   `json:",omitempty"`
	Shell             string   `json:",omitempty"`
}

// Kind returns which of http, tcp, grpc, ttl, script or docker the
// definition is, or "".
func (d CheckDefinition) Kind() string {
	switch {
	case d.HTTP != "":
		return CheckHTTP
	case d.TCP != "":
		return CheckTCP
	case d.GRPC != "":
		return CheckGRPC
	case d.TTL > 0:
		return CheckTTL
	case d.DockerContainerID != "":
		return CheckDocker
	case len(d.ScriptArgs) > 0:
		return CheckScript
	}
	return ""
}

// Check is a health check on a node or on one of its instances.
type Check struct {
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
	Definition  CheckDefinition
	CreateIndex uint64
	ModifyIndex uint64
}

// KVEntry is one key in the key/value store.
type KVEntry struct {
	Key       string
	Flags     uint64
	Value     []byte
	LockIndex uint64
	// Session is the session that holds the key's lock ("" when none).
	Session     string
	CreateIndex uint64
	ModifyIndex uint64
}

// ServiceEntry is an instance with its node and every check that bears on
// it (the node's own checks and the instance's).
type ServiceEntry struct {
	Node     *Node
	Instance *Instance
	Checks   []*Check
}

// AggregatedStatus is the worst status among checks (passing when empty).
func AggregatedStatus(checks []*Check) string {
	status := HealthPassing
	for _, c := range checks {
		switch c.Status {
		case HealthCritical:
			return HealthCritical
		case HealthWarning:
			status = HealthWarning
		}
	}
	return status
}

// The errors of updating a TTL check through the agent that runs it:
// part of the catalog's vocabulary so that the HTTP API can answer them
// without linking the check runner.
var (
	// ErrCheckNotFound is returned by UpdateTTL for a check that the runner
	// does not run.
	ErrCheckNotFound = errors.New("discovery: check not found")
	// ErrNotTTLCheck is returned by UpdateTTL for a check that is not a TTL
	// check.
	ErrNotTTLCheck = errors.New("discovery: check is not a TTL check")
)
