package config

import (
	"errors"
	"os"

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/discovery/local"
)

// A service definition file is Consul's format, decoded straight into
// discovery.ServiceRegistration, the API's shape, whose hcl tags are the
// keys a file may use:
//
//	service {
//	  name = "web"
//	  port = 8080
//	  check { http = "http://127.0.0.1:8080/health"  interval = "10s" }
//	}
//
// Keys may be snake_case or CamelCase, as Consul accepts both.

func collectServices(file string, one *discovery.ServiceRegistration, many []discovery.ServiceRegistration) []local.FileDefinition {
	var out []local.FileDefinition
	if one != nil {
		out = append(out, local.FileDefinition{File: file, Service: *one})
	}
	for _, d := range many {
		out = append(out, local.FileDefinition{File: file, Service: d})
	}
	return out
}

// servicesFile is what a file in services.d may hold: nothing else.
type servicesFile struct {
	Service  *discovery.ServiceRegistration  `hcl:"service"`
	Services []discovery.ServiceRegistration `hcl:"services"`
}

// LoadServiceFiles reads every *.hcl and *.json file of dir. A missing dir
// holds no services: a fresh host has none yet.
func LoadServiceFiles(dir string) ([]local.FileDefinition, error) {
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
	var out []local.FileDefinition
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
func ReadServiceFile(path string) ([]local.FileDefinition, error) {
	var sf servicesFile
	if err := DecodeFile(path, &sf); err != nil {
		return nil, err
	}
	return collectServices(path, sf.Service, sf.Services), nil
}
