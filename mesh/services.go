package mesh

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vmesh/vmesh/discovery"
)

// ServiceDef is a service definition in Consul's file format:
//
//	service {
//	  name = "web"
//	  port = 8080
//	  check { http = "http://127.0.0.1:8080/health"  interval = "10s" }
//	}
//
// Keys may be snake_case or CamelCase, as Consul accepts both.
type ServiceDef struct {
	Line              int               `hcl:",line"`
	ID                string            `hcl:"id"`
	Name              string            `hcl:"name"`
	Kind              string            `hcl:"kind"`
	Tags              []string          `hcl:"tags"`
	Address           string            `hcl:"address"`
	Port              int               `hcl:"port"`
	Meta              map[string]string `hcl:"meta"`
	EnableTagOverride bool              `hcl:"enable_tag_override"`
	Weights           *WeightsDef       `hcl:"weights"`
	Check             *CheckDef         `hcl:"check"`
	Checks            []CheckDef        `hcl:"checks"`
	Token             string            `hcl:"token"`
	// Protocol is tcp (default), http, http2, grpc or udp; it is stored as
	// Meta.protocol, where the Consul API carries it.
	Protocol string `hcl:"protocol"`
	// User is the Unix user (name or UID) the service's app runs as on
	// this host: its captured outbound connections leave with the
	// service's identity (docs/capture.md). Stored as Meta["vmesh-user"].
	User    string      `hcl:"user"`
	Connect *ConnectDef `hcl:"connect"`
}

// ConnectDef is the part of Consul's connect block that vmesh reads:
//
//	connect {
//	  sidecar_service {
//	    proxy {
//	      upstreams = [{ destination_name = "orders", local_bind_port = 19001 }]
//	    }
//	  }
//	}
//
// Any other key is an error with its file and line.
type ConnectDef struct {
	SidecarService *SidecarServiceDef `hcl:"sidecar_service"`
}

// SidecarServiceDef is connect.sidecar_service.
type SidecarServiceDef struct {
	Proxy *ProxyDef `hcl:"proxy"`
}

// ProxyDef is connect.sidecar_service.proxy.
type ProxyDef struct {
	Upstreams []UpstreamDef `hcl:"upstreams"`
}

// UpstreamDef is one explicit upstream: the host's proxy listens on
// local_bind_address (default 127.0.0.1):local_bind_port and forwards to
// destination_name.
type UpstreamDef struct {
	DestinationName  string `hcl:"destination_name"`
	LocalBindAddress string `hcl:"local_bind_address"`
	LocalBindPort    int    `hcl:"local_bind_port"`
}

// WeightsDef are SRV weights by health.
type WeightsDef struct {
	Passing int `hcl:"passing"`
	Warning int `hcl:"warning"`
}

// CheckDef is a health check in a service definition.
type CheckDef struct {
	ID                             string              `hcl:"id"`
	CheckID                        string              `hcl:"check_id"`
	Name                           string              `hcl:"name"`
	Notes                          string              `hcl:"notes"`
	Status                         string              `hcl:"status"`
	HTTP                           string              `hcl:"http"`
	Header                         map[string][]string `hcl:"header"`
	Method                         string              `hcl:"method"`
	Body                           string              `hcl:"body"`
	TLSServerName                  string              `hcl:"tls_server_name"`
	TLSSkipVerify                  bool                `hcl:"tls_skip_verify"`
	TCP                            string              `hcl:"tcp"`
	GRPC                           string              `hcl:"grpc"`
	GRPCUseTLS                     bool                `hcl:"grpc_use_tls"`
	TTL                            time.Duration       `hcl:"ttl"`
	Interval                       time.Duration       `hcl:"interval"`
	Timeout                        time.Duration       `hcl:"timeout"`
	DeregisterCriticalServiceAfter time.Duration       `hcl:"deregister_critical_service_after"`
	Args                           []string            `hcl:"args"`
	ScriptArgs                     []string            `hcl:"script_args"`
}

// fileService is a service definition with the file and line it came from.
type fileService struct {
	File string
	Def  ServiceDef
}

func collectServices(file string, one *ServiceDef, many []ServiceDef) []fileService {
	var out []fileService
	if one != nil {
		out = append(out, fileService{File: file, Def: *one})
	}
	for _, d := range many {
		out = append(out, fileService{File: file, Def: d})
	}
	return out
}

// servicesFile is what a file in services.d may hold: nothing else.
type servicesFile struct {
	Service  *ServiceDef  `hcl:"service"`
	Services []ServiceDef `hcl:"services"`
}

// loadServiceFiles reads every *.hcl and *.json file of dir. A missing dir
// holds no services.
func loadServiceFiles(dir string) ([]fileService, error) {
	if dir == "" {
		return nil, nil
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	files, err := configFiles([]string{dir})
	if err != nil {
		return nil, err
	}
	var out []fileService
	var errs []error
	for _, f := range files {
		var sf servicesFile
		if err := decodeConfigFile(f, &sf); err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, collectServices(f, sf.Service, sf.Services)...)
	}
	return out, errors.Join(errs...)
}

// registration converts a file definition to the API's registration type,
// so that files and the API share one validation.
func (d *ServiceDef) registration() *discovery.ServiceRegistration {
	reg := &discovery.ServiceRegistration{
		Kind: d.Kind, ID: d.ID, Name: d.Name, Tags: d.Tags, Address: d.Address, Port: d.Port,
		Meta: d.Meta, EnableTagOverride: d.EnableTagOverride,
	}
	// protocol and user travel in Meta, where the Consul API carries them.
	// A copy: the definition's own map stays as the file wrote it.
	copied := false
	for _, kv := range [][2]string{{discovery.MetaProtocol, d.Protocol}, {discovery.MetaUser, d.User}} {
		if kv[1] == "" || d.Meta[kv[0]] != "" {
			continue
		}
		if !copied {
			copied = true
			reg.Meta = make(map[string]string, len(d.Meta)+2)
			for k, v := range d.Meta {
				reg.Meta[k] = v
			}
		}
		reg.Meta[kv[0]] = kv[1]
	}
	if d.Connect != nil {
		reg.Connect = &discovery.ServiceConnect{}
		if sc := d.Connect.SidecarService; sc != nil {
			reg.Connect.SidecarService = &discovery.ServiceRegistration{}
			if sc.Proxy != nil {
				p := &discovery.ConnectProxyConfig{}
				for _, u := range sc.Proxy.Upstreams {
					p.Upstreams = append(p.Upstreams, discovery.ConnectUpstream{
						DestinationName: u.DestinationName, LocalBindAddress: u.LocalBindAddress, LocalBindPort: u.LocalBindPort,
					})
				}
				reg.Connect.SidecarService.Proxy = p
			}
		}
	}
	if d.Weights != nil {
		reg.Weights = &discovery.Weights{Passing: d.Weights.Passing, Warning: d.Weights.Warning}
	}
	if d.Check != nil {
		reg.Check = d.Check.checkType()
	}
	for i := range d.Checks {
		reg.Checks = append(reg.Checks, d.Checks[i].checkType())
	}
	return reg
}

func (c *CheckDef) checkType() *discovery.CheckType {
	id := c.CheckID
	if id == "" {
		id = c.ID
	}
	return &discovery.CheckType{
		CheckID: id, Name: c.Name, Notes: c.Notes, Status: c.Status,
		HTTP: c.HTTP, Header: c.Header, Method: c.Method, Body: c.Body,
		TLSServerName: c.TLSServerName, TLSSkipVerify: c.TLSSkipVerify,
		TCP: c.TCP, GRPC: c.GRPC, GRPCUseTLS: c.GRPCUseTLS,
		TTL: discovery.Duration(c.TTL), Interval: discovery.Duration(c.Interval), Timeout: discovery.Duration(c.Timeout),
		DeregisterCriticalServiceAfter: discovery.Duration(c.DeregisterCriticalServiceAfter),
		Args:                           c.Args, ScriptArgs: c.ScriptArgs,
	}
}

// buildFileServices validates file definitions into registrations for node.
// Errors name file and line; two definitions with one ID are an error.
func buildFileServices(node string, defs []fileService) ([]*discovery.RegisterServiceRequest, error) {
	var out []*discovery.RegisterServiceRequest
	var errs []error
	seen := map[string]string{}
	users := fileUsers{}
	for _, fs := range defs {
		where := fmt.Sprintf("%s:%d", fs.File, fs.Def.Line)
		// The protocol travels as Meta.protocol, but a file says protocol:
		// name the key the file used.
		if p := fs.Def.Protocol; p != "" {
			if !discovery.ValidProtocol(p) {
				errs = append(errs, fmt.Errorf("%s: service %q: protocol: %q is not one of %s", where, fs.Def.Name, p, strings.Join(discovery.Protocols, ", ")))
				continue
			}
			if m := fs.Def.Meta[discovery.MetaProtocol]; m != "" && m != p {
				errs = append(errs, fmt.Errorf("%s: service %q: protocol: %q conflicts with meta.protocol %q", where, fs.Def.Name, p, m))
				continue
			}
		}
		if u := fs.Def.User; u != "" {
			if m := fs.Def.Meta[discovery.MetaUser]; m != "" && m != u {
				errs = append(errs, fmt.Errorf("%s: service %q: user: %q conflicts with meta.%s %q", where, fs.Def.Name, u, discovery.MetaUser, m))
				continue
			}
			if _, err := discovery.LookupUser(u); err != nil {
				errs = append(errs, fmt.Errorf("%s: service %q: user: %w", where, fs.Def.Name, err))
				continue
			}
		}
		req, err := fs.Def.registration().Build(node, "file:"+filepath.Clean(fs.File))
		if err != nil {
			msg := strings.TrimPrefix(err.Error(), discovery.ErrInvalid.Error()+": ")
			errs = append(errs, fmt.Errorf("%s: service %q: %s", where, fs.Def.Name, strings.ReplaceAll(msg, "\n", "; ")))
			continue
		}
		id := req.Instance.ID
		if prev, dup := seen[id]; dup {
			errs = append(errs, fmt.Errorf("%s: service %q: id: duplicate ID %q (also defined at %s)", where, fs.Def.Name, id, prev))
			continue
		}
		if err := users.add(req.Instance, where); err != nil {
			errs = append(errs, fmt.Errorf("%s: service %q: %s: %w", where, fs.Def.Name, userKey(fs.Def), err))
			continue
		}
		seen[id] = where
		out = append(out, req)
	}
	return out, errors.Join(errs...)
}

// userKey is the key a file used to name the user.
func userKey(d ServiceDef) string {
	if d.User != "" {
		return "user"
	}
	return "meta." + discovery.MetaUser
}

// fileUsers checks the users of file definitions: each exists on this
// host, and runs one service (its captured connections can carry only one
// identity). Instances of one service may share their user.
type fileUsers map[uint32]fileUser

type fileUser struct{ service, user, where string }

func (fu fileUsers) add(in discovery.Instance, where string) error {
	if in.User == "" {
		return nil
	}
	uid, err := discovery.LookupUser(in.User)
	if err != nil {
		return err
	}
	if prev, ok := fu[uid]; ok && !strings.EqualFold(prev.service, in.Service) {
		same := ""
		if prev.user != in.User {
			same = fmt.Sprintf(" (as %q, the same UID %d)", prev.user, uid)
		}
		return fmt.Errorf("%q already runs service %q%s, defined at %s; one service per user", in.User, prev.service, same, prev.where)
	}
	if _, ok := fu[uid]; !ok {
		fu[uid] = fileUser{service: in.Service, user: in.User, where: where}
	}
	return nil
}

// fileUpstreamPorts are the ports the upstreams of file definitions bind:
// a user's new port avoids them, so that which of two files registers
// first does not decide whether an upstream is refused.
func fileUpstreamPorts(reqs []*discovery.RegisterServiceRequest) []int {
	var out []int
	for _, req := range reqs {
		for _, u := range req.Instance.Upstreams {
			out = append(out, u.LocalBindPort)
		}
	}
	return out
}

// assignUserPort gives a file service's user its port
// (discovery.UserPortAllocator.Assign; the caller holds its lock). A
// definition the catalog refuses (an upstream on a user's port) is logged
// with its file and skipped: the catalog keeps what it has for it, and the
// other files are still registered (a returned error would stop them, and
// at start keep the agent retrying).
func (a *Agent) assignUserPort(req *discovery.RegisterServiceRequest, avoid []int) (skip bool, err error) {
	err = a.userPorts.Assign(a.store, req, avoid...)
	if errors.Is(err, discovery.ErrInvalid) {
		a.logger.Error("not registering service from file: "+strings.TrimPrefix(err.Error(), discovery.ErrInvalid.Error()+": "),
			"id", req.Instance.ID, "file", strings.TrimPrefix(req.Instance.Source, "file:"))
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("registering %s from %s: %w", req.Instance.ID, strings.TrimPrefix(req.Instance.Source, "file:"), err)
	}
	return false, nil
}
