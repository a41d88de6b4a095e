package mesh

import (
	"errors"
	"testing"

	"github.com/vmesh/vmesh/discovery"
)

// TestScriptChecksPolicy: Consul's two keys. Neither: no script check
// from anywhere. enable_local_script_checks: from service files only,
// never the API. enable_script_checks: both. Other checks pass through.
func TestScriptChecksPolicy(t *testing.T) {
	script := discovery.CheckDefinition{ScriptArgs: []string{"/bin/true"}}
	docker := discovery.CheckDefinition{ScriptArgs: []string{"/bin/true"}, DockerContainerID: "c1"}
	tcp := discovery.CheckDefinition{TCP: "127.0.0.1:1"}
	for _, c := range []struct {
		name              string
		all, local        bool
		def               discovery.CheckDefinition
		wantAPI, wantFile bool
	}{
		{"off, script", false, false, script, true, true},
		{"off, docker", false, false, docker, true, true},
		{"off, tcp", false, false, tcp, false, false},
		{"local only", false, true, script, true, false},
		{"all", true, false, script, false, false},
	} {
		a := &Agent{}
		a.cfg.EnableScriptChecks, a.cfg.EnableLocalScriptChecks = c.all, c.local
		api := a.scriptChecksRefused("x", c.def, false)
		file := a.scriptChecksRefused("x", c.def, true)
		if (api != nil) != c.wantAPI || (file != nil) != c.wantFile {
			t.Errorf("%s: API %v, file %v; want refused %v, %v", c.name, api, file, c.wantAPI, c.wantFile)
		}
		if api != nil && !errors.Is(api, discovery.ErrInvalid) {
			t.Errorf("%s: %v is not ErrInvalid (a 400)", c.name, api)
		}
	}
}
