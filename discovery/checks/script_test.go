package checks

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/discovery"
)

func scriptCheck(id string, args ...string) *discovery.Check {
	return &discovery.Check{
		CheckID: id, Name: id, Status: discovery.HealthCritical,
		Definition: discovery.CheckDefinition{ScriptArgs: args, Interval: time.Hour, Timeout: 2 * time.Second},
	}
}

// TestScriptChecks: with Scripts on, the exit code is the status (0
// passing, 1 warning, else critical) and the output the check's; a
// script past its timeout is killed and critical; a Docker check is
// critical (not run).
func TestScriptChecks(t *testing.T) {
	sink := newFakeCheckSink()
	r := newTestCheckRunner(t, sink)
	r.Scripts = true
	ok := scriptCheck("ok", "sh", "-c", "echo fine")
	ok.Status = discovery.HealthWarning
	docker := scriptCheck("docker", "/bin/true")
	docker.Definition.DockerContainerID = "f972c95ebf0e"
	slow := scriptCheck("slow", "sh", "-c", "sleep 30")
	slow.Definition.Timeout = 100 * time.Millisecond
	slow.Status = discovery.HealthPassing
	r.Sync([]*discovery.Check{ok, scriptCheck("warn", "sh", "-c", "echo meh; exit 1"),
		scriptCheck("crit", "sh", "-c", "echo bad >&2; exit 2"), docker, slow})

	if c := sink.waitStatus(t, "ok", discovery.HealthPassing); c.output != "fine\n" {
		t.Errorf("ok output = %q", c.output)
	}
	if c := sink.waitStatus(t, "warn", discovery.HealthWarning); c.output != "meh\n" {
		t.Errorf("warn output = %q", c.output)
	}
	if c := sink.waitStatus(t, "crit", discovery.HealthCritical); c.output != "bad\n" {
		t.Errorf("crit output = %q", c.output)
	}
	if c := sink.waitStatus(t, "slow", discovery.HealthCritical); !strings.Contains(c.output, "Timed out") {
		t.Errorf("slow output = %q", c.output)
	}
	if c := sink.waitStatus(t, "docker", discovery.HealthCritical); !strings.Contains(c.output, "not run") {
		t.Errorf("docker output = %q", c.output)
	}
}

// TestScriptChecksOff: without Scripts, nothing runs, whatever the
// catalog holds.
func TestScriptChecksOff(t *testing.T) {
	sink := newFakeCheckSink()
	r := newTestCheckRunner(t, sink)
	marker := t.TempDir() + "/ran"
	c := scriptCheck("s", "sh", "-c", "touch "+marker)
	c.Status = discovery.HealthPassing
	r.Sync([]*discovery.Check{c})
	if got := sink.waitStatus(t, "s", discovery.HealthCritical); !strings.Contains(got.output, "not enabled") {
		t.Errorf("output = %q", got.output)
	}
	if fileExists(marker) {
		t.Error("a script ran with Scripts off")
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
