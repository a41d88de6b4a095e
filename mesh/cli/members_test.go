package cli

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestMembersRoles: vmesh members shows each node's role and, for a
// server, its raft state; a client has none.
func TestMembersRoles(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/vmesh/members" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`[{"Name":"n1","Addr":"10.0.0.1:7400","Role":"leader","Status":"alive","NodeRole":"server"},
			{"Name":"old","Addr":"10.0.0.2:7400","Role":"voter","Status":"alive"},
			{"Name":"web-01","Addr":"10.0.0.9","Role":"none","Status":"alive","LastContactMs":800,"NodeRole":"client"}]`))
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	code, out, errs := runCLI(t, "members", "-http-addr", "127.0.0.1:"+port)
	if code != ExitOK {
		t.Fatalf("members = %d %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := [][]string{
		{"Node", "Address", "Role", "Raft", "Health", "Last", "contact"},
		{"n1", "10.0.0.1:7400", "server", "leader", "alive", "0s"},
		{"old", "10.0.0.2:7400", "server", "voter", "alive", "-"},
		{"web-01", "10.0.0.9", "client", "-", "alive", "800ms"},
	}
	if len(lines) != len(want) {
		t.Fatalf("members printed %d lines; want %d:\n%s", len(lines), len(want), out)
	}
	for i, w := range want {
		if got := strings.Fields(lines[i]); strings.Join(got, " ") != strings.Join(w, " ") {
			t.Errorf("line %d = %q; want %q", i, got, w)
		}
	}
}
