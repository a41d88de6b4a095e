package mesh

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmesh/vmesh/systemd"
)

// notifyMsg is one datagram the agent sent to its NOTIFY_SOCKET.
type notifyMsg struct {
	at   time.Time
	text string
	// leader is what /v1/status/leader answered right after a READY=1
	// arrived.
	leader string
}

func (m notifyMsg) has(assignment string) bool {
	for _, l := range strings.Split(m.text, "\n") {
		if l == assignment {
			return true
		}
	}
	return false
}

// notifySocket plays systemd's side of sd_notify: a unixgram socket whose
// datagrams are kept in order.
type notifySocket struct {
	path string
	conn *net.UnixConn
	done chan struct{}

	mu   sync.Mutex
	msgs []notifyMsg
}

// listenNotify listens on a datagram socket; onReady runs in the reader
// before a READY=1 is recorded and returns what /v1/status/leader says.
func listenNotify(t *testing.T, onReady func() string) *notifySocket {
	t.Helper()
	s := &notifySocket{path: filepath.Join(t.TempDir(), "notify.sock"), done: make(chan struct{})}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: s.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	s.conn = conn
	go func() {
		defer close(s.done)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			m := notifyMsg{at: time.Now(), text: string(buf[:n])}
			if m.has("READY=1") {
				m.leader = onReady()
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, m)
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-s.done
	})
	return s
}

func (s *notifySocket) all() []notifyMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]notifyMsg(nil), s.msgs...)
}

// await waits for a message at index from or later with the assignment
// and returns its index.
func (s *notifySocket) await(t *testing.T, from int, assignment string, d time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		msgs := s.all()
		for i := from; i < len(msgs); i++ {
			if msgs[i].has(assignment) {
				return i
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s; got %q", assignment, d, texts(msgs[min(from, len(msgs)):]))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func texts(msgs []notifyMsg) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.text)
	}
	return out
}

// TestSystemdNotify runs the agent as systemd would with Type=notify and
// WatchdogSec: NOTIFY_SOCKET points at the test's datagram socket and
// WATCHDOG_USEC is 400 ms.
func TestSystemdNotify(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the vmesh binary; skipped with -short")
	}
	var p *proc
	leaderNow := func() string {
		// The banner, printed before any READY=1 can be sent, names the
		// HTTP address.
		var addr string
		waitFor(t, 5*time.Second, "the banner", func() bool {
			m := bannerHTTP.FindStringSubmatch(p.stdout.String())
			if m != nil {
				addr = m[1]
			}
			return m != nil
		})
		resp, err := http.Get("http://" + addr + "/v1/status/leader")
		if err != nil {
			return "error: " + err.Error()
		}
		defer resp.Body.Close()
		var leader string
		json.NewDecoder(resp.Body).Decode(&leader)
		return leader
	}
	sock := listenNotify(t, func() string { return leaderNow() })
	t.Setenv("NOTIFY_SOCKET", sock.path)
	t.Setenv("WATCHDOG_USEC", "400000")
	t.Setenv("WATCHDOG_PID", "") // unset: go-systemd would compare it with the agent's PID

	svcDir := t.TempDir()
	p = startProc(t, "agent", "-bootstrap", "-node", "sd-1", "-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-http-addr", "127.0.0.1:0", "-cluster-port", "0", "-data-dir", t.TempDir(), "-services-dir", svcDir)
	addr := p.waitHTTP(10 * time.Second)

	// READY=1 only once there is a leader, and only once.
	ready := sock.await(t, 0, "READY=1", 20*time.Second)
	msgs := sock.all()
	if l := msgs[ready].leader; l == "" || strings.HasPrefix(l, "error") {
		t.Fatalf("READY=1 arrived while /v1/status/leader answered %q", l)
	}
	if !strings.Contains(msgs[ready].text, "STATUS=leader 127.0.0.1:") {
		t.Errorf("READY=1 without a leader STATUS: %q", msgs[ready].text)
	}
	for _, m := range msgs[:ready] {
		if !m.has("WATCHDOG=1") {
			t.Errorf("before READY=1: %q", m.text)
		}
	}

	// WATCHDOG=1 every 200 ms (half of WATCHDOG_USEC): about 10 in 2 s.
	t0 := msgs[ready].at
	time.Sleep(time.Until(t0.Add(2100 * time.Millisecond)))
	pings := 0
	for _, m := range sock.all() {
		if m.has("WATCHDOG=1") && !m.at.Before(t0) && m.at.Before(t0.Add(2*time.Second)) {
			pings++
		}
	}
	t.Logf("%d WATCHDOG=1 in 2s with WATCHDOG_USEC=400000", pings)
	if pings < 6 || pings > 14 {
		t.Errorf("%d WATCHDOG=1 in 2s; want about 10 (one per 200ms)", pings)
	}

	// SIGHUP: RELOADING=1, then READY=1, and by then the service file
	// written before the signal is registered.
	writeFile(t, svcDir, "late.hcl", "service {\n  name = \"late\"\n  port = 7\n}\n")
	from := len(sock.all())
	p.cmd.Process.Signal(syscall.SIGHUP)
	reloading := sock.await(t, from, "RELOADING=1", 10*time.Second)
	if m := sock.all()[reloading]; !strings.Contains(m.text, "MONOTONIC_USEC=") {
		t.Errorf("RELOADING=1 without MONOTONIC_USEC: %q", m.text)
	}
	readyAgain := sock.await(t, reloading, "READY=1", 10*time.Second)
	var late []map[string]any
	getJSON(t, addr, "/v1/catalog/service/late", &late)
	if len(late) != 1 {
		t.Errorf("after RELOADING=1 and READY=1 (%q), /v1/catalog/service/late = %v; want the file's service", sock.all()[readyAgain].text, late)
	}
	if !strings.Contains(sock.all()[readyAgain].text, "STATUS=leader 127.0.0.1:") {
		t.Errorf("READY=1 after reload without a STATUS: %q", sock.all()[readyAgain].text)
	}

	// SIGTERM: STOPPING=1, and no watchdog ping after it.
	from = len(sock.all())
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	stopping := sock.await(t, from, "STOPPING=1", 5*time.Second)
	time.Sleep(50 * time.Millisecond)
	for _, m := range sock.all()[stopping+1:] {
		t.Errorf("after STOPPING=1: %q", m.text)
	}
}

// TestNotifierStates drives the agent's notifier in process with a fake:
// the order of READY, RELOADING and STOPPING, and what STATUS says.
func TestNotifierStates(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))

	t.Run("not in a cluster", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Bootstrap = false
		a := NewAgent(cfg, logger, io.Discard)
		if err := a.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		rec := &systemd.Recorder{}
		sd := startNotifyWith(a, rec, 0, logger)
		waitFor(t, 5*time.Second, "READY=1", func() bool { return rec.Count("READY=1") == 1 })
		sd.stop()
		sd.stop()
		want := []string{"READY=1 STATUS=not in a cluster: waiting for 'vmesh join ADDR -token T'", "STOPPING=1"}
		if got := rec.Lines(); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("notifications %q; want %q", got, want)
		}
	})

	t.Run("bootstrap", func(t *testing.T) {
		a := startAgent(t, testConfig(t))
		if code, body := httpDo(t, http.MethodPut, "http://"+a.HTTPAddr()+"/v1/agent/service/register", `{"Name":"web","Port":80}`); code != http.StatusOK {
			t.Fatalf("register: %d %s", code, body)
		}
		rec := &systemd.Recorder{}
		sd := startNotifyWith(a, rec, 200*time.Millisecond, logger)
		waitFor(t, 5*time.Second, "READY=1", func() bool { return rec.Count("READY=1") == 1 })
		waitFor(t, 5*time.Second, "WATCHDOG=1", func() bool { return rec.Count("WATCHDOG=1") >= 2 })
		sd.reloading()
		sd.reloaded(errors.New("bad.hcl:3: port: not a number"))
		sd.reloading()
		sd.reloaded(nil)
		sd.stop()
		var got []string
		for _, l := range rec.Lines() {
			if l != "WATCHDOG=1" {
				got = append(got, l)
			}
		}
		leader, _ := a.ref.get().Leader()
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
		sd := startNotifyWith(a, rec, 0, logger)
		// Whatever the race with the leader election: RELOADING=1 only
		// after a READY=1, and never a READY=1 after STOPPING=1.
		sd.reloading()
		sd.reloaded(nil)
		sd.stop()
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
