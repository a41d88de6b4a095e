package config

import (
	"errors"
	"os"
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

// FileService is a service definition with the file it came from (the
// definition holds its line), so every later check can name file:line.
type FileService struct {
	File string
	Def  ServiceDef
}

func collectServices(file string, one *ServiceDef, many []ServiceDef) []FileService {
	var out []FileService
	if one != nil {
		out = append(out, FileService{File: file, Def: *one})
	}
	for _, d := range many {
		out = append(out, FileService{File: file, Def: d})
	}
	return out
}

// servicesFile is what a file in services.d may hold: nothing else.
type servicesFile struct {
	Service  *ServiceDef  `hcl:"service"`
	Services []ServiceDef `hcl:"services"`
}

// LoadServiceFiles reads every *.hcl and *.json file of dir. A missing dir
// holds no services: a fresh host has none yet.
func LoadServiceFiles(dir string) ([]FileService, error) {
	if dir == "" {
		return nil, nil
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	files, err := Files([]string{dir})
	if err != nil {
		return nil, err
	}
	var out []FileService
	var errs []error
	for _, f := range files {
		defs, err := ReadServiceFile(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, defs...)
	}
	return out, errors.Join(errs...)
}

// ReadServiceFile decodes one service file, which may hold `service {}`
// and `services [...]` and nothing else.
func ReadServiceFile(path string) ([]FileService, error) {
	var sf servicesFile
	if err := DecodeFile(path, &sf); err != nil {
		return nil, err
	}
	return collectServices(path, sf.Service, sf.Services), nil
}

// Registration converts a file definition to the API's registration type,
// so that files and the API share one validation.
func (d *ServiceDef) Registration() *discovery.ServiceRegistration {
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
