package mesh

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"

	"github.com/vmesh/vmesh/systemd"
)

// TestNotifierStates drives the agent's notifier in process with a fake:
// the order of READY, RELOADING and STOPPING, and what STATUS says.
func TestNotifierStates(t *testing.T) {
	logger := testkit.Discard()

	t.Run("not in a cluster", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Bootstrap = false
		a := NewAgent(cfg, logger, io.Discard)
		if err := a.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		rec := &systemd.Recorder{}
		sd := systemd.StartReporterWith(newSDService(a), rec, 0, logger)
		testkit.WaitFor(t, 5*time.Second, "READY=1", func() bool { return rec.Count("READY=1") == 1 })
		sd.Stop()
		sd.Stop()
		want := []string{"READY=1 STATUS=not in a cluster: waiting for 'vmesh join ADDR'", "STOPPING=1"}
		if got := rec.Lines(); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("notifications %q; want %q", got, want)
		}
	})

	t.Run("bootstrap", func(t *testing.T) {
		a := startAgent(t, testConfig(t))
		if code, body := testkit.HTTPDo(t, http.MethodPut, "http://"+a.HTTPAddr()+"/v1/agent/service/register", `{"Name":"web","Port":80}`); code != http.StatusOK {
			t.Fatalf("register: %d %s", code, body)
		}
		rec := &systemd.Recorder{}
		sd := systemd.StartReporterWith(newSDService(a), rec, 200*time.Millisecond, logger)
		testkit.WaitFor(t, 5*time.Second, "READY=1", func() bool { return rec.Count("READY=1") == 1 })
		testkit.WaitFor(t, 5*time.Second, "WATCHDOG=1", func() bool { return rec.Count("WATCHDOG=1") >= 2 })
		sd.Reloading()
		sd.Reloaded(errors.New("bad.hcl:3: port: not a number"))
		sd.Reloading()
		sd.Reloaded(nil)
		sd.Stop()
		var got []string
		for _, l := range rec.Lines() {
			if l != "WATCHDOG=1" {
				got = append(got, l)
			}
		}
		leader, _ := a.member.Server().Leader()
		want := []string{
			"READY=1 STATUS=leader " + leader + ", 1 service",
			"RELOADING=1",
			"READY=1 STATUS=leader " + leader + ", 1 service; last reload failed: bad.hcl:3: port: not a number",
			"RELOADING=1",
			"READY=1 STATUS=leader " + leader + ", 1 service",
			"STOPPING=1",
		}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("notifications:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if l := rec.Lines(); l[len(l)-1] != "STOPPING=1" {
			t.Errorf("%q after STOPPING=1", l[len(l)-1])
		}
	})

	t.Run("before ready", func(t *testing.T) {
		cfg := testConfig(t)
		a := NewAgent(cfg, logger, io.Discard)
		if err := a.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		rec := &systemd.Recorder{}
		sd := systemd.StartReporterWith(newSDService(a), rec, 0, logger)
		// Whatever the race with the leader election: RELOADING=1 only
		// after a READY=1, and never a READY=1 after STOPPING=1.
		sd.Reloading()
		sd.Reloaded(nil)
		sd.Stop()
		lines := rec.Lines()
		if len(lines) > 0 && lines[0] == "RELOADING=1" {
			t.Errorf("RELOADING=1 before READY=1: %q", lines)
		}
		if lines[len(lines)-1] != "STOPPING=1" {
			t.Errorf("last notification %q; want STOPPING=1 (%q)", lines[len(lines)-1], lines)
		}
	})
}

func TestDialable(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8500": "127.0.0.1:8500",
		"0.0.0.0:8500":   "127.0.0.1:8500",
		"[::]:8500":      "[::1]:8500",
		"10.0.0.5:8500":  "10.0.0.5:8500",
		"":               "",
	} {
		if got := dialable(in); got != want {
			t.Errorf("dialable(%q) = %q; want %q", in, got, want)
		}
	}
}
