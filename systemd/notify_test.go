package systemd

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// listenNotify is a stand-in for systemd's notify socket.
func listenNotify(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return conn
}

func readDatagram(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("reading the notify socket: %v", err)
	}
	return string(buf[:n])
}

func TestSocketNotifier(t *testing.T) {
	conn := listenNotify(t)
	n := NewNotifier()
	for _, tc := range []struct {
		name string
		call func() error
		want string // a regexp for the whole datagram
	}{
		{"ready", func() error { return n.Ready("leader 10.0.0.1:7400, 12 services") }, `^READY=1\nSTATUS=leader 10\.0\.0\.1:7400, 12 services$`},
		{"ready without status", func() error { return n.Ready("") }, `^READY=1$`},
		{"reloading", n.Reloading, `^RELOADING=1\nMONOTONIC_USEC=[1-9][0-9]*\nSTATUS=reloading configuration$`},
		{"stopping", n.Stopping, `^STOPPING=1\nSTATUS=stopping$`},
		{"status on one line", func() error { return n.Status("reload failed:\nbad.hcl:3") }, `^STATUS=reload failed: bad\.hcl:3$`},
		{"watchdog", n.Watchdog, `^WATCHDOG=1$`},
	} {
		if err := tc.call(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := readDatagram(t, conn); !regexp.MustCompile(tc.want).MatchString(got) {
			t.Errorf("%s: sent %q; want %s", tc.name, got, tc.want)
		}
	}
}

func TestSocketNotifierNoSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	os.Unsetenv("NOTIFY_SOCKET")
	n := NewNotifier()
	for _, call := range []func() error{func() error { return n.Ready("x") }, n.Reloading, n.Stopping, n.Watchdog, func() error { return n.Status("x") }} {
		if err := call(); err != nil {
			t.Errorf("without NOTIFY_SOCKET: %v; want a no-op", err)
		}
	}

	// A socket that is set but gone is an error the agent logs.
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone.sock"))
	if err := n.Ready(""); err == nil || !strings.Contains(err.Error(), "READY=1") {
		t.Errorf("Ready with a missing socket = %v; want an error naming READY=1", err)
	}
}

func TestRecorder(t *testing.T) {
	r := &Recorder{}
	r.Ready("up")
	r.Watchdog()
	r.Status("two\nlines")
	r.Reloading()
	r.Ready("")
	r.Stopping()
	want := []string{"READY=1 STATUS=up", "WATCHDOG=1", "STATUS=two lines", "RELOADING=1", "READY=1", "STOPPING=1"}
	if got := r.Lines(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("Lines() = %q; want %q", got, want)
	}
	if r.Count("READY=1") != 2 {
		t.Errorf("Count(READY=1) = %d; want 2", r.Count("READY=1"))
	}
	r.Err = errors.New("boom")
	if r.Watchdog() == nil {
		t.Error("Recorder.Err is not returned")
	}
}
