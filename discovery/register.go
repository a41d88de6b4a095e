package discovery

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// defaultCheckTimeout is Consul's default probe timeout.
const defaultCheckTimeout = 10 * time.Second

// Build validates a registration and turns it into the command that stores
// it on node. Every problem found is reported, each naming its field
// (prefix names the registration, e.g. "" for the API or "service[1]." in a
// file); the error wraps ErrInvalid.
func (reg *ServiceRegistration) Build(node, source string) (*RegisterServiceRequest, error) {
	var errs problems
	bad := errs.bad
	if strings.TrimSpace(reg.Name) == "" {
		bad("Name", "missing service name")
	} else if strings.ContainsAny(reg.Name, "/ \t\n") {
		bad("Name", "%q may not contain '/' or white space", reg.Name)
	}
	if reg.Port < 0 || reg.Port > 65535 {
		bad("Port", "must be between 0 and 65535, got %d", reg.Port)
	}
	kind := reg.buildKind(bad) // kinds.go: proxy and gateway records
	for field, raw := range map[string][]byte{
		"Ports": reg.Ports, "AI": reg.AI,
	} {
		if !emptyRaw(raw) {
			bad(field, "is not supported yet")
		}
	}
	for tag, a := range reg.TaggedAddresses {
		if tag == "" {
			bad("TaggedAddresses", "a tag may not be empty")
		}
		if a.Port < 0 || a.Port > 65535 {
			bad("TaggedAddresses."+tag+".Port", "must be between 0 and 65535, got %d", a.Port)
		}
	}
	upstreams := buildConnect(reg.Connect, bad)
	protocol := reg.Meta[MetaProtocol]
	if protocol != "" && !ValidProtocol(protocol) {
		bad("Meta."+MetaProtocol, "%q is not one of %s", protocol, strings.Join(Protocols, ", "))
	}
	user, named := reg.Meta[MetaUser]
	if named {
		if err := validUserSpelling(user); err != nil {
			bad("Meta."+MetaUser, "%v", err)
		}
	}
	if reg.SocketPath != "" {
		bad("SocketPath", "is not supported yet")
	}
	if reg.Name == ServerServiceName {
		bad("Name", "%q is the name of the servers' own service; choose another", reg.Name)
	}
	for _, ns := range []struct{ field, v string }{{"Namespace", reg.Namespace}, {"Partition", reg.Partition}} {
		if ns.v != "" && ns.v != "default" {
			bad(ns.field, "%q: only the default one exists", ns.v)
		}
	}
	weights := Weights{Passing: 1, Warning: 1}
	if reg.Weights != nil {
		if reg.Weights.Passing < 1 {
			bad("Weights.Passing", "must be at least 1, got %d", reg.Weights.Passing)
		}
		if reg.Weights.Warning < 0 {
			bad("Weights.Warning", "must not be negative, got %d", reg.Weights.Warning)
		}
		weights = *reg.Weights
	}
	id := reg.ID
	if id == "" {
		id = reg.Name
	}
	inst := Instance{
		Node: node, ID: id, Service: reg.Name, Tags: reg.Tags, Address: reg.Address, Port: reg.Port,
		Meta: reg.Meta, Weights: weights, EnableTagOverride: reg.EnableTagOverride, Source: source,
		Protocol: protocol, Upstreams: upstreams, User: user,
		Kind: kind, Proxy: recordProxy(kind, reg.Proxy),
	}
	if len(reg.TaggedAddresses) > 0 {
		inst.TaggedAddresses = reg.TaggedAddresses
	}
	if !emptyRaw(reg.Locality) {
		var loc Locality
		dec := json.NewDecoder(bytes.NewReader(reg.Locality))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&loc); err != nil {
			bad("Locality", "want {\"Region\", \"Zone\"}: %v", strings.TrimPrefix(err.Error(), "json: "))
		} else if loc != (Locality{}) {
			inst.Locality = &loc
		}
	}

	var defs []*CheckType
	var fields []string
	if reg.Check != nil {
		defs = append(defs, reg.Check)
		fields = append(fields, "Check")
	}
	for i, c := range reg.Checks {
		if c == nil {
			continue
		}
		defs = append(defs, c)
		fields = append(fields, fmt.Sprintf("Checks[%d]", i))
	}
	seen := map[string]string{}
	var checks []*Check
	for i, ct := range defs {
		chk, err := ct.build(fields[i])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		chk.Node, chk.ServiceID, chk.ServiceName = node, id, reg.Name
		if chk.CheckID == "" {
			chk.CheckID = "service:" + id
			if len(defs) > 1 {
				chk.CheckID = fmt.Sprintf("service:%s:%d", id, i+1)
			}
		}
		if chk.Name == "" {
			chk.Name = fmt.Sprintf("Service '%s' check", reg.Name)
		}
		if prev, dup := seen[chk.CheckID]; dup {
			bad(fields[i]+".CheckID", "duplicate ID %q (also used by %s)", chk.CheckID, prev)
			continue
		}
		seen[chk.CheckID] = fields[i]
		checks = append(checks, chk)
	}
	sidecar := buildSidecar(reg, &inst, bad) // sidecar.go
	if err := errs.err(); err != nil {
		return nil, err
	}
	return &RegisterServiceRequest{Instance: inst, Checks: checks, Sidecar: sidecar}, nil
}

// build validates one check definition. field names it in messages.
func (ct *CheckType) build(field string) (*Check, error) {
	var errs []error
	bad := func(sub, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", field, sub, fmt.Sprintf(format, args...)))
	}
	def := CheckDefinition{
		HTTP: ct.HTTP, Header: ct.Header, Method: ct.Method, Body: ct.Body,
		TLSServerName: ct.TLSServerName, TLSSkipVerify: ct.TLSSkipVerify,
		TCP: ct.TCP, GRPC: ct.GRPC, GRPCUseTLS: ct.GRPCUseTLS,
		TTL: time.Duration(ct.TTL), Interval: time.Duration(ct.Interval), Timeout: time.Duration(ct.Timeout),
		DeregisterCriticalServiceAfter: time.Duration(ct.DeregisterCriticalServiceAfter),
	}
	def.ScriptArgs = ct.ScriptArgs
	if len(def.ScriptArgs) == 0 {
		def.ScriptArgs = ct.Args
	}
	def.DockerContainerID, def.Shell = ct.DockerContainerID, ct.Shell
	if def.Shell != "" && def.DockerContainerID == "" {
		bad("Shell", "is only for a Docker check (DockerContainerID)")
	}
	if def.DockerContainerID != "" && len(def.ScriptArgs) == 0 {
		bad("Args", "a Docker check needs the command to run in the container")
	}
	switch {
	case ct.H2PING != "":
		bad("H2PING", "H2PING checks are not supported yet")
	case ct.UDP != "":
		bad("UDP", "UDP checks are not supported yet")
	case ct.AliasNode != "" || ct.AliasService != "":
		bad("AliasService", "alias checks are not supported yet")
	}
	targets := 0
	for _, set := range []bool{def.HTTP != "", def.TCP != "", def.GRPC != "", def.TTL != 0, len(def.ScriptArgs) > 0} {
		if set {
			targets++
		}
	}
	if targets == 0 && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("%s: a check needs one of HTTP, TCP, GRPC or TTL (or Args: a script check, where the agent's config enables them)", field))
	}
	if targets > 1 {
		errs = append(errs, fmt.Errorf("%s: set only one of HTTP, TCP, GRPC, TTL or Args", field))
	}
	if def.HTTP != "" {
		if u, err := url.Parse(def.HTTP); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("HTTP", "%q is not an http:// or https:// URL", def.HTTP)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"Interval", def.Interval}, {"Timeout", def.Timeout}, {"TTL", def.TTL}, {"DeregisterCriticalServiceAfter", def.DeregisterCriticalServiceAfter}} {
		if d.v < 0 {
			bad(d.name, "must not be negative, got %s", d.v)
		}
	}
	if def.TTL == 0 && targets == 1 && def.Interval <= 0 {
		bad("Interval", "must be > 0 for HTTP, TCP, GRPC, script and Docker checks")
	}
	if ct.Status != "" && !ValidHealthState(ct.Status) {
		bad("Status", "%q is not one of passing, warning, critical", ct.Status)
	}
	if ct.SuccessBeforePassing < 0 || ct.FailuresBeforeCritical < 0 || ct.FailuresBeforeWarning < 0 {
		bad("FailuresBeforeCritical", "counts must not be negative")
	}
	if def.TTL == 0 && def.Timeout == 0 {
		def.Timeout = defaultCheckTimeout
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	id := ct.CheckID
	if id == "" {
		id = ct.ID
	}
	return &Check{
		CheckID: id, Name: ct.Name, Notes: ct.Notes, Status: ct.Status, ServiceID: ct.ServiceID,
		Type: def.Kind(), Definition: def,
	}, nil
}

// BuildCheck validates a standalone check registration (PUT
// /v1/agent/check/register).
func (ct *CheckType) BuildCheck(node string) (*Check, error) {
	if ct.Name == "" {
		return nil, fmt.Errorf("%w: Name: missing check name", ErrInvalid)
	}
	chk, err := ct.build("check")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if chk.CheckID == "" {
		chk.CheckID = chk.Name
	}
	chk.Node = node
	return chk, nil
}
