package cli

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// `vmesh ca` and `vmesh force-leave` call the agent's endpoints and say
// what happened; an agent's refusal is exit 1 with its message.
func TestCAAndForceLeaveCommands(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []string
	calls := func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), got...) }
	roots := `{"ActiveRootID":"fp2","TrustDomain":"vmesh.local","Roots":[
		{"ID":"fp2","Name":"vmesh cluster CA vmesh.local x","Active":true,"NotAfter":"2036-01-01T00:00:00Z"},
		{"ID":"fp1","Name":"vmesh cluster CA vmesh.local","Active":false,"NotAfter":"2035-01-01T00:00:00Z","DropAfter":"2031-01-01T01:00:00Z"}]}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.Path)
		mu.Unlock()
		switch {
		case r.Method == http.MethodPut && r.URL.Path == "/v1/vmesh/ca/rotate", r.Method == http.MethodGet && r.URL.Path == "/v1/connect/ca/roots":
			io.WriteString(w, roots)
		case r.URL.Path == "/v1/agent/force-leave/n1":
			http.Error(w, `raft: the node is the leader: node "n1" is the leader`, http.StatusConflict)
		case r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/v1/agent/force-leave/"):
			w.WriteHeader(http.StatusOK)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	for _, tc := range []struct {
		args []string
		code int
		want string
		call string
	}{
		{[]string{"ca", "rotate"}, ExitOK, "the active root is now fp2", "PUT /v1/vmesh/ca/rotate"},
		{[]string{"ca", "roots"}, ExitOK, "fp1  vmesh cluster CA vmesh.local    previous  2035-01-01T00:00:00Z  2031-01-01T01:00:00Z", "GET /v1/connect/ca/roots"},
		{[]string{"ca", "frob"}, ExitUsage, "want rotate or roots", ""},
		{[]string{"force-leave", "web-01"}, ExitOK, "Removed node web-01", "PUT /v1/agent/force-leave/web-01"},
		{[]string{"force-leave", "n1"}, ExitFailed, `node "n1" is the leader`, "PUT /v1/agent/force-leave/n1"},
		{[]string{"force-leave"}, ExitUsage, "want one node name", ""},
	} {
		mu.Lock()
		got = nil
		mu.Unlock()
		code, out, errs := runCLI(t, append(tc.args, "-http-addr", addr)...)
		if code != tc.code || !strings.Contains(out+errs, tc.want) {
			t.Errorf("vmesh %v = %d\n%s%s\nwant %d with %q", tc.args, code, out, errs, tc.code, tc.want)
		}
		if c := calls(); tc.call != "" && (len(c) != 1 || c[0] != tc.call) {
			t.Errorf("vmesh %v called %v; want %s", tc.args, c, tc.call)
		}
	}
}
