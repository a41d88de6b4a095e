package e2e

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
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
	found := -1
	var msgs []notifyMsg
	if !testkit.Eventually(d, func() bool {
		msgs = s.all()
		for i := from; i < len(msgs); i++ {
			if msgs[i].has(assignment) {
				found = i
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no %s within %s; got %q", assignment, d, texts(msgs[min(from, len(msgs)):]))
	}
	return found
}

// mark sends a datagram of the test's own to the socket and returns its
// index once it has been read.
func (s *notifySocket) mark(t *testing.T) int {
	t.Helper()
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: s.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	from := len(s.all())
	if _, err := c.Write([]byte(testMark)); err != nil {
		t.Fatal(err)
	}
	return s.await(t, from, testMark, 5*time.Second)
}

// testMark is no sd_notify assignment.
const testMark = "VMESH_TEST_MARK=1"

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
	skipShort(t)
	t.Parallel()
	const ip = "127.12.0.1"
	var p *proc
	leaderNow := func() string {
		// The banner, printed before any READY=1 can be sent, names the
		// HTTP address.
		var addr string
		testkit.WaitFor(t, 5*time.Second, "the banner", func() bool {
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

	svcDir := t.TempDir()
	cmd := exec.Command(vmeshBin(t), "agent", "-bootstrap", "-node", "sd-1", "-bind", ip, "-client", ip,
		"-http-addr", ip+":0", "-cluster-port", "0", "-data-dir", t.TempDir(), "-services-dir", svcDir)
	// The agent's own environment, not the test process's (t.Setenv),
	// so that agents of tests running alongside do not notify this socket.
	// WATCHDOG_PID is left out: go-systemd would compare it with the
	// agent's PID.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "NOTIFY_SOCKET" && k != "WATCHDOG_USEC" && k != "WATCHDOG_PID" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+sock.path, "WATCHDOG_USEC=400000")
	p = runProc(t, cmd)
	addr := p.waitHTTP(10 * time.Second)

	// READY=1 only once there is a leader, and only once.
	ready := sock.await(t, 0, "READY=1", 20*time.Second)
	msgs := sock.all()
	if l := msgs[ready].leader; l == "" || strings.HasPrefix(l, "error") {
		t.Fatalf("READY=1 arrived while /v1/status/leader answered %q", l)
	}
	if !strings.Contains(msgs[ready].text, "STATUS=leader "+ip+":") {
		t.Errorf("READY=1 without a leader STATUS: %q", msgs[ready].text)
	}
	for _, m := range msgs[:ready] {
		if !m.has("WATCHDOG=1") {
			t.Errorf("before READY=1: %q", m.text)
		}
	}

	// WATCHDOG=1 every 200 ms (half of WATCHDOG_USEC): about 10 in 2 s.
	t0 := msgs[ready].at
	testkit.WaitFor(t, 10*time.Second, "a notification after the 2 s window", func() bool {
		msgs := sock.all()
		return msgs[len(msgs)-1].at.After(t0.Add(2 * time.Second))
	})
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
	testkit.WriteFile(t, svcDir, "late.hcl", "service {\n  name = \"late\"\n  port = 7\n}\n")
	from := len(sock.all())
	p.cmd.Process.Signal(syscall.SIGHUP)
	reloading := sock.await(t, from, "RELOADING=1", 10*time.Second)
	if m := sock.all()[reloading]; !strings.Contains(m.text, "MONOTONIC_USEC=") {
		t.Errorf("RELOADING=1 without MONOTONIC_USEC: %q", m.text)
	}
	readyAgain := sock.await(t, reloading, "READY=1", 10*time.Second)
	var late []map[string]any
	testkit.GetJSON(t, addr, "/v1/catalog/service/late", &late)
	if len(late) != 1 {
		t.Errorf("after RELOADING=1 and READY=1 (%q), /v1/catalog/service/late = %v; want the file's service", sock.all()[readyAgain].text, late)
	}
	if !strings.Contains(sock.all()[readyAgain].text, "STATUS=leader "+ip+":") {
		t.Errorf("READY=1 after reload without a STATUS: %q", sock.all()[readyAgain].text)
	}

	// SIGTERM: STOPPING=1, and no watchdog ping after it.
	from = len(sock.all())
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	stopping := sock.await(t, from, "STOPPING=1", 5*time.Second)
	// The agent has exited; a datagram of ours queues behind anything it
	// sent, so once ours is read every one of its own has been.
	end := sock.mark(t)
	for _, m := range sock.all()[stopping+1 : end] {
		t.Errorf("after STOPPING=1: %q", m.text)
	}
}
