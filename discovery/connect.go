package discovery

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
)

// Service protocols, as a service definition's protocol field and
// Meta.protocol spell them. The data plane proxies tcp and udp at L4 and the
// others at L7.
const (
	ProtocolTCP   = "tcp"
	ProtocolHTTP  = "http"
	ProtocolHTTP2 = "http2"
	ProtocolGRPC  = "grpc"
	ProtocolUDP   = "udp"
)

// Protocols lists every valid protocol.
var Protocols = []string{ProtocolTCP, ProtocolHTTP, ProtocolHTTP2, ProtocolGRPC, ProtocolUDP}

// ValidProtocol reports whether p is one of Protocols.
func ValidProtocol(p string) bool { return slices.Contains(Protocols, p) }

// IsL7Protocol reports whether p is proxied with HTTP routing (http, http2,
// grpc).
func IsL7Protocol(p string) bool {
	return p == ProtocolHTTP || p == ProtocolHTTP2 || p == ProtocolGRPC
}

// MetaProtocol is the Meta key that carries an instance's protocol through
// the Consul API, which has no protocol field of its own (Consul's
// proxy-defaults read the same key).
const MetaProtocol = "protocol"

// Upstream is an explicit upstream of an instance: the local proxy listens
// on LocalBindAddress:LocalBindPort and forwards to DestinationName.
// LocalBindAddress is empty when the registration named none: the host's
// proxy then listens on its agent's client address (-client), which only
// that agent knows, so the catalog keeps it empty rather than a guess.
type Upstream struct {
	DestinationName  string
	LocalBindAddress string
	LocalBindPort    int
}

// The wire shapes below are the subset of Consul's Connect registration that
// vmesh reads: connect { sidecar_service { proxy { upstreams = [...] } } }.
// Every other field a stock consul/api client may send is decoded, so that
// strict decoding accepts it, and refused when set.

// ServiceConnect is a registration's Connect block (Consul's
// AgentServiceConnect).
//
// In a file, only sidecar_service is a key, and inside it proxy and what
// names the sidecar record (name, tags, meta, port: sidecar.go): the
// host's proxy is not a service of its own, so a file saying checks
// there gets an unknown key at its line rather than a refusal later.
type ServiceConnect struct {
	Native         bool
	SidecarService *ServiceRegistration `hcl:"sidecar_service,only=proxy|name|tags|meta|port"`
}

// ConnectProxyConfig is a registration's Proxy block (Consul's
// AgentServiceConnectProxyConfig). Only Upstreams, and only inside
// Connect.SidecarService, is supported.
type ConnectProxyConfig struct {
	EnvoyExtensions        json.RawMessage
	DestinationServiceName string
	DestinationServiceID   string
	LocalServiceAddress    string
	LocalServicePort       int
	LocalServicePorts      json.RawMessage
	LocalServiceSocketPath string
	Mode                   string
	TransparentProxy       json.RawMessage
	Config                 json.RawMessage
	Upstreams              []ConnectUpstream `hcl:"upstreams"`
	MeshGateway            json.RawMessage
	Expose                 json.RawMessage
	AccessLogs             json.RawMessage
}

// ConnectUpstream is one upstream as Consul's API spells it.
type ConnectUpstream struct {
	DestinationType      string
	DestinationPartition string
	DestinationNamespace string
	DestinationPeer      string
	DestinationName      string `hcl:"destination_name"`
	DestinationPort      string
	Datacenter           string
	LocalBindAddress     string `hcl:"local_bind_address"`
	LocalBindPort        int    `hcl:"local_bind_port"`
	LocalBindSocketPath  string
	LocalBindSocketMode  string
	Config               json.RawMessage
	MeshGateway          json.RawMessage
	CentrallyConfigured  bool
}

// setFields lists, as "prefix.Field", every field of the struct v that is
// set, skipping the names in allowed. A raw JSON value counts as unset when
// it is null or empty ({} or []), which is what consul/api sends for a
// struct it has nothing in.
func setFields(prefix string, v any, allowed ...string) []string {
	rv := reflect.Indirect(reflect.ValueOf(v))
	var out []string
	for i := range rv.NumField() {
		f, name := rv.Field(i), rv.Type().Field(i).Name
		if slices.Contains(allowed, name) {
			continue
		}
		set := !f.IsZero()
		if raw, ok := f.Interface().(json.RawMessage); ok {
			set = !emptyRaw(raw)
		}
		if set {
			out = append(out, prefix+name)
		}
	}
	return out
}

func emptyRaw(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || s == "null" || s == "{}" || s == "[]"
}

// sidecarWithoutDefaults is sc less what the consul CLI (`consul services
// register`) fills into every sidecar it sends: Consul's default Weights
// (1 passing, 1 warning), an empty Check and an empty Checks (and, from
// its map decoding, possibly empty Tags, Meta and TaggedAddresses). Consul reads
// them as "no setting" (the sidecar then gets its default checks); so does
// vmesh, whose host proxy has neither weights nor checks of its own.
func sidecarWithoutDefaults(sc *ServiceRegistration) *ServiceRegistration {
	c := *sc
	if c.Weights != nil && *c.Weights == (Weights{Passing: 1, Warning: 1}) {
		c.Weights = nil
	}
	if c.Check != nil && reflect.ValueOf(*c.Check).IsZero() {
		c.Check = nil
	}
	if len(c.Checks) == 0 {
		c.Checks = nil
	}
	if len(c.Tags) == 0 {
		c.Tags = nil
	}
	if len(c.Meta) == 0 {
		c.Meta = nil
	}
	if len(c.TaggedAddresses) == 0 {
		c.TaggedAddresses = nil
	}
	return &c
}

// buildConnect validates a registration's Connect block and returns its
// upstreams (nil when there are none).
func buildConnect(c *ServiceConnect, bad func(field, format string, args ...any)) []Upstream {
	if c == nil {
		return nil
	}
	if c.Native {
		bad("Connect.Native", "not supported: vmesh proxies every service on the host")
	}
	sc := c.SidecarService
	if sc == nil {
		return nil
	}
	// vmesh runs one proxy per host: the sidecar record (sidecar.go)
	// describes it, so a SidecarService may name and label that record
	// (buildSidecar checks ID, Kind, Port and Address against the node
	// proxy), and only what the proxy forwards to is a setting. It has no
	// checks of its own: its health is its service's.
	// Line is where a file's block starts, not a setting.
	for _, f := range setFields("Connect.SidecarService.", sidecarWithoutDefaults(sc), "Proxy", "Line",
		"ID", "Name", "Kind", "Port", "Address", "Tags", "Meta", "Weights", "EnableTagOverride") {
		bad(f, "not supported: the host's proxy is not a service of its own; a sidecar may set ID, Name, Tags, Meta, Weights, EnableTagOverride and Proxy.Upstreams")
	}
	if sc.Proxy == nil {
		return nil
	}
	for _, f := range setFields("Connect.SidecarService.Proxy.", sc.Proxy, "Upstreams") {
		bad(f, "not supported; only Upstreams is")
	}
	var out []Upstream
	// Keyed by the address as written: "" (the agent's client address)
	// collides with "" only; whether it is also an explicit address is
	// known on the host, where the first upstream keeps the port.
	type bind struct {
		addr string
		port int
	}
	binds := map[bind]int{}
	for i, u := range sc.Proxy.Upstreams {
		field := fmt.Sprintf("Connect.SidecarService.Proxy.Upstreams[%d].", i)
		for _, f := range setFields(field, &u, "DestinationType", "DestinationName", "DestinationNamespace",
			"DestinationPartition", "LocalBindAddress", "LocalBindPort") {
			bad(f, "not supported")
		}
		if u.DestinationType != "" && u.DestinationType != "service" {
			bad(field+"DestinationType", "%q is not supported; only service is", u.DestinationType)
		}
		for _, ns := range []struct{ name, v string }{{"DestinationNamespace", u.DestinationNamespace}, {"DestinationPartition", u.DestinationPartition}} {
			if ns.v != "" && ns.v != "default" {
				bad(field+ns.name, "%q: only the default one exists", ns.v)
			}
		}
		switch {
		case strings.TrimSpace(u.DestinationName) == "":
			bad(field+"DestinationName", "missing")
		case strings.ContainsAny(u.DestinationName, "/ \t\n"):
			bad(field+"DestinationName", "%q may not contain '/' or white space", u.DestinationName)
		}
		if u.LocalBindPort < 1 || u.LocalBindPort > 65535 {
			bad(field+"LocalBindPort", "must be between 1 and 65535, got %d", u.LocalBindPort)
		}
		addr := u.LocalBindAddress
		if addr != "" {
			ip, err := netip.ParseAddr(addr)
			if err != nil {
				bad(field+"LocalBindAddress", "%q is not an IP address", u.LocalBindAddress)
				continue
			}
			addr = ip.String()
		}
		if u.LocalBindPort >= 1 && u.LocalBindPort <= 65535 {
			k := bind{addr, u.LocalBindPort}
			if prev, dup := binds[k]; dup {
				where := "the client address"
				if addr != "" {
					where = addr
				}
				bad(field+"LocalBindPort", "%d on %s is already bound by Upstreams[%d]", u.LocalBindPort, where, prev)
			}
			binds[k] = i
		}
		out = append(out, Upstream{DestinationName: u.DestinationName, LocalBindAddress: addr, LocalBindPort: u.LocalBindPort})
	}
	return out
}
