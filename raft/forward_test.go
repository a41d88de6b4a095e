package raft

import (
	"strings"
	"testing"

	"github.com/vmesh/vmesh/discovery"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A forwarded command is judged by the caller's certificate name: its own
// node's writes pass, another node's are refused, the leader's own
// commands are never accepted from a node, and cluster-wide writes pass.
func TestAuthorizeForward(t *testing.T) {
	svc := func(node string, checkNode string) discovery.Command {
		r := &discovery.RegisterServiceRequest{Instance: discovery.Instance{Node: node, ID: "web-1", Service: "web"}}
		if checkNode != "" {
			r.Checks = []*discovery.Check{{Node: checkNode, CheckID: "c", ServiceID: "web-1"}}
		}
		return r
	}
	for _, c := range []struct {
		name string
		cmd  discovery.Command
		want string // "" allowed, else part of the refusal
	}{
		{"own node", discovery.RegisterNodeRequest{Node: discovery.Node{Name: "a", ID: "1"}}, ""},
		{"other node", discovery.RegisterNodeRequest{Node: discovery.Node{Name: "b", ID: "1"}}, `not node "b"'s`},
		{"own service", svc("a", "a"), ""},
		{"service on another node", svc("b", ""), `not node "b"'s`},
		{"own service, check on another node", svc("a", "b"), `not node "b"'s`},
		{"own service, sidecar record on another node", &discovery.RegisterServiceRequest{
			Instance: discovery.Instance{Node: "a", ID: "web-1", Service: "web"},
			Sidecar:  &discovery.Instance{Node: "b", ID: "web-1-sidecar-proxy", Service: "web-sidecar-proxy"}}, `not node "b"'s`},
		{"deregister another node", discovery.DeregisterNodeRequest{Node: "b"}, `not node "b"'s`},
		{"deregister another's service", discovery.DeregisterServiceRequest{Node: "b", ServiceID: "x"}, `not node "b"'s`},
		{"update another's check", discovery.UpdateCheckRequest{Node: "b", CheckID: "x", Status: "passing"}, `not node "b"'s`},
		{"own check update", discovery.UpdateCheckRequest{Node: "a", CheckID: "x", Status: "passing"}, ""},
		{"plant a CA", discovery.SetCARequest{}, "leader's own"},
		{"move a VIP", discovery.VIPRequest{Op: discovery.VIPAllocate, Service: "web", IP: "240.0.0.1"}, "leader's own"},
		{"KV", discovery.KVRequest{Op: discovery.KVSet, Entry: discovery.KVEntry{Key: "k"}}, ""},
		{"session on another node", discovery.SessionRequest{Op: discovery.SessionCreate, Session: discovery.Session{ID: "s", Node: "b"}}, ""},
		{"transaction", discovery.TxnRequest{Ops: []discovery.TxnKVOp{{Verb: discovery.TxnKVLock, Key: "k", Session: "s"}}}, ""},
	} {
		buf, err := encodeCommand(c.cmd)
		if err != nil {
			t.Fatal(err)
		}
		err = authorizeForward("a", buf)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.want != "" && (err == nil || status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want PermissionDenied with %q", c.name, err, c.want)
		}
	}
}
