package raft

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"
	hraft "github.com/hashicorp/raft"
	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
)

func newTestFSM(t testing.TB) *fsm {
	return &fsm{store: discovery.NewStore(), logger: testkit.Logger(t)}
}

func commandLog(t testing.TB, idx uint64, cmd discovery.Command) *hraft.Log {
	t.Helper()
	buf, err := encodeCommand(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return &hraft.Log{Type: hraft.LogCommand, Index: idx, Data: buf}
}

// record is one snapshot record; records(s) lists a whole catalog,
// every table including the per-table indexes, in Walk order.
type record struct {
	Type discovery.RecordType
	Rec  any
}

func records(t testing.TB, s *discovery.Store) []record {
	t.Helper()
	var out []record
	if err := s.Snapshot().Walk(func(rt discovery.RecordType, rec any) error {
		out = append(out, record{rt, rec})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestFSMApplyDispatch(t *testing.T) {
	f := newTestFSM(t)
	s := f.store
	def := discovery.CheckDefinition{HTTP: "http://127.0.0.1:8080/health", Interval: 10 * time.Second, Timeout: time.Second}
	steps := []struct {
		cmd   discovery.Command
		check func(t *testing.T, idx uint64)
	}{
		{
			discovery.RegisterNodeRequest{Node: discovery.Node{ID: "id-1", Name: "n1", Address: "10.0.0.1", Meta: map[string]string{"rack": "a"}}},
			func(t *testing.T, idx uint64) {
				_, n, _, _ := s.Node(nil, "n1")
				want := &discovery.Node{ID: "id-1", Name: "n1", Address: "10.0.0.1", Meta: map[string]string{"rack": "a"}, CreateIndex: idx, ModifyIndex: idx}
				if !reflect.DeepEqual(n, want) {
					t.Errorf("node = %+v, want %+v", n, want)
				}
			},
		},
		{
			discovery.RegisterNodeRequest{Node: discovery.Node{ID: "id-2", Name: "n2", Address: "10.0.0.2"}},
			func(t *testing.T, idx uint64) {
				i, nodes, _ := s.Nodes(nil)
				if len(nodes) != 2 || i != idx || nodes[1].CreateIndex != idx {
					t.Errorf("nodes index %d = %+v, want 2 nodes, n2 created at %d", i, nodes, idx)
				}
			},
		},
		{
			discovery.RegisterServiceRequest{
				Instance: discovery.Instance{Node: "n1", ID: "web1", Service: "web", Tags: []string{"v1"}, Port: 8080},
				Checks:   []*discovery.Check{{CheckID: "web1-http", Name: "http", Definition: def}},
			},
			func(t *testing.T, idx uint64) {
				_, in, _ := s.Instance(nil, "n1", "web1")
				if in == nil || in.CreateIndex != idx || in.ModifyIndex != idx || in.Port != 8080 {
					t.Errorf("instance = %+v, want web1 at %d", in, idx)
				}
				_, c, _ := s.Check(nil, "n1", "web1-http")
				if c == nil || c.CreateIndex != idx || c.ServiceName != "web" || c.Status != discovery.HealthCritical || !reflect.DeepEqual(c.Definition, def) {
					t.Errorf("check = %+v, want critical web check at %d with %+v", c, idx, def)
				}
			},
		},
		{
			discovery.RegisterCheckRequest{Check: discovery.Check{Node: "n1", CheckID: "serf", Name: "serf", Status: discovery.HealthPassing}},
			func(t *testing.T, idx uint64) {
				_, c, _ := s.Check(nil, "n1", "serf")
				if c == nil || c.CreateIndex != idx || c.ModifyIndex != idx || c.Status != discovery.HealthPassing {
					t.Errorf("node check = %+v, want passing at %d", c, idx)
				}
			},
		},
		{
			discovery.UpdateCheckRequest{Node: "n1", CheckID: "web1-http", Status: discovery.HealthPassing, Output: "HTTP 200"},
			func(t *testing.T, idx uint64) {
				_, c, _ := s.Check(nil, "n1", "web1-http")
				if c.Status != discovery.HealthPassing || c.Output != "HTTP 200" || c.ModifyIndex != idx || c.CreateIndex != idx-2 {
					t.Errorf("check = %+v, want passing, modified at %d, created at %d", c, idx, idx-2)
				}
			},
		},
		{
			discovery.KVRequest{Op: discovery.KVSet, Entry: discovery.KVEntry{Key: "cfg/bin", Value: []byte{0, 1, 255}, Flags: 99}},
			func(t *testing.T, idx uint64) {
				_, e, _ := s.KVGet(nil, "cfg/bin")
				want := &discovery.KVEntry{Key: "cfg/bin", Value: []byte{0, 1, 255}, Flags: 99, CreateIndex: idx, ModifyIndex: idx}
				if !reflect.DeepEqual(e, want) {
					t.Errorf("kv = %+v, want %+v", e, want)
				}
			},
		},
		{
			discovery.KVRequest{Op: discovery.KVCAS, Entry: discovery.KVEntry{Key: "cfg/bin", Value: []byte("v2"), ModifyIndex: 6}},
			func(t *testing.T, idx uint64) {
				_, e, _ := s.KVGet(nil, "cfg/bin")
				if string(e.Value) != "v2" || e.ModifyIndex != idx || e.CreateIndex != idx-1 {
					t.Errorf("kv after cas = %+v, want v2 modified at %d", e, idx)
				}
			},
		},
		{
			discovery.DeregisterCheckRequest{Node: "n1", CheckID: "serf"},
			func(t *testing.T, idx uint64) {
				i, c, _ := s.Check(nil, "n1", "serf")
				if c != nil || i != idx {
					t.Errorf("after deregister: check %+v at index %d, want nil at %d", c, i, idx)
				}
			},
		},
		{
			discovery.DeregisterServiceRequest{Node: "n1", ServiceID: "web1"},
			func(t *testing.T, idx uint64) {
				i, in, _ := s.Instance(nil, "n1", "web1")
				_, checks, _ := s.NodeChecks(nil, "n1")
				if in != nil || len(checks) != 0 || i != idx {
					t.Errorf("after deregister: instance %+v, checks %+v, index %d; want none at %d", in, checks, i, idx)
				}
			},
		},
		{
			discovery.KVRequest{Op: discovery.KVDelete, Entry: discovery.KVEntry{Key: "cfg/bin"}},
			func(t *testing.T, idx uint64) {
				i, e, _ := s.KVGet(nil, "cfg/bin")
				if e != nil || i != idx {
					t.Errorf("after delete: kv %+v at index %d, want nil at %d", e, i, idx)
				}
			},
		},
		{
			discovery.DeregisterNodeRequest{Node: "n2"},
			func(t *testing.T, idx uint64) {
				i, nodes, _ := s.Nodes(nil)
				if len(nodes) != 1 || nodes[0].Name != "n1" || i != idx {
					t.Errorf("after deregister: nodes %+v at %d, want only n1 at %d", nodes, i, idx)
				}
			},
		},
		{
			discovery.SetCARequest{CA: discovery.CARoot{CertPEM: []byte("cert"), SealedKeys: []discovery.SealedCAKey{{Node: "n1", Blob: []byte("key")}}, TrustDomain: "td", Fingerprint: "fp1"}},
			func(t *testing.T, idx uint64) {
				i, ca, _ := s.CA(nil)
				if ca == nil || ca.Fingerprint != "fp1" || ca.SealedFor("n1") == nil || string(ca.SealedFor("n1").Blob) != "key" || ca.CreateIndex != idx || i != idx {
					t.Errorf("CA = %+v at %d, want fp1 at %d", ca, i, idx)
				}
			},
		},
		{
			discovery.TokenCreateRequest{Token: discovery.JoinToken{ID: "t1", SecretHash: discovery.HashTokenSecret("s3cret"), ExpiresAt: 1e9}},
			func(t *testing.T, idx uint64) {
				tok, _ := s.Token("t1")
				if tok == nil || !tok.SecretMatches("s3cret") || tok.SecretMatches("other") || tok.CreateIndex != idx || tok.ExpiresAt != 1e9 {
					t.Errorf("token = %+v, want t1 created at %d", tok, idx)
				}
			},
		},
		{
			discovery.TokenDeleteRequest{ID: "t1"},
			func(t *testing.T, idx uint64) {
				if tok, _ := s.Token("t1"); tok != nil {
					t.Errorf("token after delete = %+v, want nil", tok)
				}
			},
		},
		{
			discovery.TokenCreateRequest{Token: discovery.JoinToken{ID: "t2", SecretHash: discovery.HashTokenSecret("s"), CreatedAt: 1e9, ExpiresAt: 2e9, Uses: 2, UsesLeft: 2}},
			func(t *testing.T, idx uint64) {
				if tok, _ := s.Token("t2"); tok == nil || tok.UsesLeft != 2 || tok.ModifyIndex != idx {
					t.Errorf("token = %+v, want t2 with 2 uses at %d", tok, idx)
				}
			},
		},
		{
			discovery.TokenUseRequest{ID: "t2", Now: 1e9 + 1},
			func(t *testing.T, idx uint64) {
				if tok, _ := s.Token("t2"); tok == nil || tok.UsesLeft != 1 || tok.Uses != 2 || tok.ModifyIndex != idx {
					t.Errorf("token after a use = %+v, want 1 use left at %d", tok, idx)
				}
			},
		},
		{
			discovery.TokenRevokeRequest{ID: "t2", Now: 1e9 + 2},
			func(t *testing.T, idx uint64) {
				if tok, _ := s.Token("t2"); tok == nil || !tok.Revoked || tok.RevokedAt != 1e9+2 || tok.ModifyIndex != idx {
					t.Errorf("token after revoke = %+v, want revoked at %d", tok, idx)
				}
			},
		},
		{
			discovery.ConfigEntryRequest{Op: discovery.ConfigEntryUpsert, Entry: discovery.ConfigEntry{
				Kind: discovery.KindServiceDefaults, Name: "web", Defaults: &discovery.ServiceDefaults{Protocol: "http"}}},
			func(t *testing.T, idx uint64) {
				i, e, _ := s.ConfigEntry(nil, discovery.KindServiceDefaults, "web")
				if e == nil || e.Defaults.Protocol != "http" || e.CreateIndex != idx || i != idx {
					t.Errorf("config entry = %+v at %d, want web's service-defaults at %d", e, i, idx)
				}
			},
		},
		{
			discovery.VIPRequest{Op: discovery.VIPAllocate, Service: "Web", IP: "240.0.0.1"},
			func(t *testing.T, idx uint64) {
				i, v, _ := s.ServiceVIP(nil, "web")
				want := &discovery.VIP{Service: "Web", IP: "240.0.0.1", CreateIndex: idx, ModifyIndex: idx}
				if !reflect.DeepEqual(v, want) || i != idx {
					t.Errorf("VIP = %+v at %d, want %+v at %d", v, i, want, idx)
				}
			},
		},
		{
			discovery.IntentionRequest{Op: discovery.IntentionUpsert, Intention: discovery.Intention{
				ID: "ixn-1", SourceName: "web", DestinationName: "*", Action: discovery.IntentionActionDeny, CreatedAt: 7, UpdatedAt: 7}},
			func(t *testing.T, idx uint64) {
				i, x, _ := s.IntentionExact(nil, "web", "*")
				want := &discovery.Intention{ID: "ixn-1", SourceName: "web", DestinationName: "*", Action: discovery.IntentionActionDeny,
					CreatedAt: 7, UpdatedAt: 7, CreateIndex: idx, ModifyIndex: idx}
				if !reflect.DeepEqual(x, want) || i != idx {
					t.Errorf("intention = %+v at %d, want %+v at %d", x, i, want, idx)
				}
			},
		},
		{
			discovery.ACLBootstrapRequest{Token: acl.Token{AccessorID: "boot", SecretID: "boot-secret", Policies: []acl.Link{{ID: acl.ManagementPolicyID}}}},
			func(t *testing.T, idx uint64) {
				tok, _ := s.TokenBySecret("boot-secret")
				p, _ := s.PolicyByID(acl.ManagementPolicyID)
				anon, _ := s.TokenBySecret(acl.AnonymousSecretID)
				if b, _ := s.ACLBootstrapIndex(); tok == nil || p == nil || anon == nil || b != idx {
					t.Errorf("after bootstrap: token %+v, management policy %+v, anonymous %+v, bootstrap index %d; want all at %d", tok, p, anon, b, idx)
				}
			},
		},
		{
			discovery.ACLPolicySetRequest{Policy: acl.Policy{ID: "p1", Name: "web-write", Rules: `service "web" { policy = "write" }`}},
			func(t *testing.T, idx uint64) {
				if p, _ := s.PolicyByName("web-write"); p == nil || p.ID != "p1" || p.CreateIndex != idx {
					t.Errorf("policy = %+v, want p1 at %d", p, idx)
				}
			},
		},
		{
			discovery.ACLRoleSetRequest{Role: acl.Role{ID: "r1", Name: "web", Policies: []acl.Link{{Name: "web-write"}}}},
			func(t *testing.T, idx uint64) {
				if r, _ := s.RoleByID("r1"); r == nil || len(r.Policies) != 1 || r.Policies[0].ID != "p1" {
					t.Errorf("role = %+v, want r1 linked to p1 by ID", r)
				}
			},
		},
		{
			discovery.ACLTokenSetRequest{Token: acl.Token{AccessorID: "a1", SecretID: "s1", Roles: []acl.Link{{ID: "r1"}}}},
			func(t *testing.T, idx uint64) {
				if tok, _ := s.TokenBySecret("s1"); tok == nil || tok.Roles[0].Name != "web" || tok.ModifyIndex != idx || s.ACLEpoch() != idx {
					t.Errorf("token = %+v, epoch %d; want a1 with role web at %d", tok, s.ACLEpoch(), idx)
				}
			},
		},
		{
			discovery.ACLTokenDeleteRequest{AccessorID: "a1"},
			func(t *testing.T, idx uint64) {
				if tok, _ := s.TokenBySecret("s1"); tok != nil {
					t.Errorf("token after delete = %+v", tok)
				}
			},
		},
		{
			discovery.ACLRoleDeleteRequest{ID: "r1"},
			func(t *testing.T, idx uint64) {
				if r, _ := s.RoleByID("r1"); r != nil {
					t.Errorf("role after delete = %+v", r)
				}
			},
		},
		{
			discovery.ACLPolicyDeleteRequest{ID: "p1"},
			func(t *testing.T, idx uint64) {
				if p, _ := s.PolicyByID("p1"); p != nil {
					t.Errorf("policy after delete = %+v", p)
				}
			},
		},
		{
			discovery.ACLChangedRequest{},
			func(t *testing.T, idx uint64) {
				if s.ACLEpoch() != idx {
					t.Errorf("ACL epoch %d, want %d", s.ACLEpoch(), idx)
				}
			},
		},
		{
			discovery.SessionRequest{Op: discovery.SessionCreate, Session: discovery.Session{
				ID: "sess-1", Node: "n1", Behavior: discovery.SessionRelease, LockDelay: time.Second, TTL: time.Minute}},
			func(t *testing.T, idx uint64) {
				i, sess, _ := s.Session(nil, "sess-1")
				want := &discovery.Session{ID: "sess-1", Node: "n1", Behavior: discovery.SessionRelease, LockDelay: time.Second, TTL: time.Minute,
					CreateIndex: idx, ModifyIndex: idx}
				if !reflect.DeepEqual(sess, want) || i != idx {
					t.Errorf("session = %+v at %d, want %+v at %d", sess, i, want, idx)
				}
			},
		},
		{
			discovery.TxnRequest{Ops: []discovery.TxnKVOp{{Verb: discovery.TxnKVLock, Key: "leader", Value: []byte("me"), Session: "sess-1"}}},
			func(t *testing.T, idx uint64) {
				_, e, _ := s.KVGet(nil, "leader")
				want := &discovery.KVEntry{Key: "leader", Value: []byte("me"), Session: "sess-1", LockIndex: 1, CreateIndex: idx, ModifyIndex: idx}
				if !reflect.DeepEqual(e, want) {
					t.Errorf("locked key = %+v, want %+v", e, want)
				}
			},
		},
		{
			discovery.RevocationRequest{Op: discovery.RevocationAdd, Revocation: discovery.Revocation{Node: "n1", Reason: "left the cluster", At: 9}},
			func(t *testing.T, idx uint64) {
				r, _ := s.Revocation(nil, "n1")
				want := &discovery.Revocation{Node: "n1", Index: idx, Reason: "left the cluster", At: 9, CreateIndex: idx, ModifyIndex: idx}
				if !reflect.DeepEqual(r, want) {
					t.Errorf("revocation = %+v, want %+v", r, want)
				}
			},
		},
		{
			discovery.CatalogRegisterRequest{Node: discovery.Node{Name: "ext", Address: "192.0.2.1"},
				Service: &discovery.Instance{ID: "db-1", Service: "db", Port: 5432},
				Checks:  []*discovery.Check{{CheckID: "db-up", Name: "db-up", Status: discovery.HealthPassing, ServiceID: "db-1"}}},
			func(t *testing.T, idx uint64) {
				_, n, ins, _ := s.Node(nil, "ext")
				_, chk, _ := s.Check(nil, "ext", "db-up")
				if n == nil || !n.External || n.CreateIndex != idx || len(ins) != 1 || chk == nil || chk.ServiceName != "db" {
					t.Errorf("external node = %+v, %+v, check %+v; want ext with db-1 and db-up at %d", n, ins, chk, idx)
				}
			},
		},
		{
			discovery.CatalogDeregisterRequest{Node: "ext", ServiceID: "db-1"},
			func(t *testing.T, idx uint64) {
				_, n, ins, _ := s.Node(nil, "ext")
				if _, chk, _ := s.Check(nil, "ext", "db-up"); n == nil || len(ins) != 0 || chk != nil {
					t.Errorf("after deregistering db-1: node %+v, instances %+v, check %+v", n, ins, chk)
				}
			},
		},
		{
			discovery.AutopilotSetRequest{Config: discovery.AutopilotConfig{LastContactThreshold: time.Second, MaxTrailingLogs: 5, MinQuorum: 3}},
			func(t *testing.T, idx uint64) {
				i, c, _ := s.Autopilot(nil)
				if i != idx || c.ModifyIndex != idx || c.MinQuorum != 3 || c.LastContactThreshold != time.Second {
					t.Errorf("autopilot = %+v at %d, want MinQuorum 3 at %d", c, i, idx)
				}
			},
		},
	}
	covered := map[discovery.MessageType]bool{}
	for i, st := range steps {
		idx := uint64(i + 1)
		t.Run(fmt.Sprintf("%d-%T", idx, st.cmd), func(t *testing.T) {
			covered[st.cmd.MessageType()&^discovery.IgnoreUnknownTypeFlag] = true
			resp := f.Apply(commandLog(t, idx, st.cmd))
			if r, ok := resp.(*discovery.TxnResult); ok && len(r.Errors) == 0 {
				resp = nil // a transaction that applied answers its results
			}
			if resp != nil {
				t.Fatalf("Apply = %v, want nil", resp)
			}
			st.check(t, idx)
			if got := s.LastIndex(); got != idx {
				t.Errorf("LastIndex = %d, want %d", got, idx)
			}
		})
	}
	// A command type added to the dispatch table needs a step here.
	for mt := range appliers {
		if !covered[mt] {
			t.Errorf("command type %d has no dispatch test", mt)
		}
	}
}

func TestFSMApplyUnknownType(t *testing.T) {
	tests := []struct {
		name      string
		data      []byte
		wantPanic string // "" when Apply must skip the entry
	}{
		{"unknown", []byte{0x7f, 0x80}, "unknown command type 127 at index 3"},
		{"zero", []byte{0x00}, "unknown command type 0 at index 3"},
		{"unknown ignorable", []byte{0x80 | 0x7f, 0x80}, ""},
		{"unknown ignorable, no payload", []byte{0x80 | 0x42}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newTestFSM(t)
			f.Apply(commandLog(t, 1, discovery.RegisterNodeRequest{Node: discovery.Node{Name: "n1"}}))
			f.Apply(commandLog(t, 2, discovery.KVRequest{Op: discovery.KVSet, Entry: discovery.KVEntry{Key: "k"}}))
			before := records(t, f.store)

			var resp any
			panicked := func() (p any) {
				defer func() { p = recover() }()
				resp = f.Apply(&hraft.Log{Type: hraft.LogCommand, Index: 3, Data: tt.data})
				return nil
			}()
			switch {
			case tt.wantPanic == "" && panicked != nil:
				t.Fatalf("Apply panicked: %v", panicked)
			case tt.wantPanic != "" && panicked == nil:
				t.Fatalf("Apply returned %v, want a panic", resp)
			case tt.wantPanic != "" && !strings.Contains(fmt.Sprint(panicked), tt.wantPanic):
				t.Errorf("panic %q does not contain %q", panicked, tt.wantPanic)
			case tt.wantPanic == "" && resp != nil:
				t.Errorf("Apply = %v, want nil", resp)
			}
			if after := records(t, f.store); !reflect.DeepEqual(before, after) {
				t.Errorf("state changed:\n before %+v\n  after %+v", before, after)
			}
		})
	}
}

// Entries that are not commands, and a known command carrying the
// ignorable bit, are handled without a panic.
func TestFSMApplyNonCommandsAndFlaggedKnownType(t *testing.T) {
	f := newTestFSM(t)
	for i, l := range []*hraft.Log{
		{Type: hraft.LogNoop, Index: 1},
		{Type: hraft.LogBarrier, Index: 2},
		{Type: hraft.LogConfiguration, Index: 3, Data: []byte{0x7f}},
		{Type: hraft.LogCommand, Index: 4},
	} {
		if resp := f.Apply(l); resp != nil {
			t.Errorf("entry %d (%v): Apply = %v, want nil", i, l.Type, resp)
		}
	}
	if got := f.store.LastIndex(); got != 0 {
		t.Fatalf("LastIndex = %d after non-commands, want 0", got)
	}
	l := commandLog(t, 5, discovery.RegisterNodeRequest{Node: discovery.Node{Name: "n1"}})
	l.Data[0] |= byte(discovery.IgnoreUnknownTypeFlag)
	if resp := f.Apply(l); resp != nil {
		t.Fatalf("Apply = %v", resp)
	}
	if _, n, _, _ := f.store.Node(nil, "n1"); n == nil || n.CreateIndex != 5 {
		t.Errorf("known type with the ignorable bit: node = %+v, want n1 at 5", n)
	}
}

func TestFSMApplyReturnsCatalogError(t *testing.T) {
	tests := []struct {
		name    string
		data    func(t *testing.T) []byte
		wantErr error  // errors.Is target, if set
		wantMsg string // substring of the error
	}{
		{
			name: "kv cas with wrong index",
			data: func(t *testing.T) []byte {
				return commandLog(t, 0, discovery.KVRequest{Op: discovery.KVCAS, Entry: discovery.KVEntry{Key: "k", Value: []byte("x"), ModifyIndex: 1}}).Data
			},
			wantErr: discovery.ErrCASConflict,
		},
		{
			name: "service on unknown node",
			data: func(t *testing.T) []byte {
				return commandLog(t, 0, discovery.RegisterServiceRequest{Instance: discovery.Instance{Node: "ghost", ID: "w", Service: "web"}}).Data
			},
			wantErr: discovery.ErrNotFound, wantMsg: `"ghost"`,
		},
		{
			name: "update of unknown check",
			data: func(t *testing.T) []byte {
				return commandLog(t, 0, discovery.UpdateCheckRequest{Node: "n1", CheckID: "nope", Status: discovery.HealthPassing}).Data
			},
			wantErr: discovery.ErrNotFound,
		},
		{
			name: "unknown kv op",
			data: func(t *testing.T) []byte {
				return commandLog(t, 0, discovery.KVRequest{Op: "frob", Entry: discovery.KVEntry{Key: "k"}}).Data
			},
			wantErr: discovery.ErrInvalid,
		},
		{
			name:    "payload that does not decode",
			data:    func(*testing.T) []byte { return []byte{byte(discovery.KVType), 0xc1} },
			wantMsg: "decoding command",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newTestFSM(t)
			f.Apply(commandLog(t, 1, discovery.RegisterNodeRequest{Node: discovery.Node{Name: "n1"}}))
			f.Apply(commandLog(t, 2, discovery.KVRequest{Op: discovery.KVSet, Entry: discovery.KVEntry{Key: "k", Value: []byte("v")}}))
			before := records(t, f.store)

			resp := f.Apply(&hraft.Log{Type: hraft.LogCommand, Index: 3, Data: tt.data(t)})
			err, ok := resp.(error)
			if !ok || err == nil {
				t.Fatalf("Apply = %#v, want an error", resp)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Apply = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Apply = %v, want it to mention %s", err, tt.wantMsg)
			}
			if after := records(t, f.store); !reflect.DeepEqual(before, after) {
				t.Errorf("failed command changed the catalog:\n before %+v\n  after %+v", before, after)
			}
		})
	}
}

// memSink is an in-memory hraft.SnapshotSink.
type memSink struct {
	bytes.Buffer
	failWrites bool
	closed     bool
	cancelled  bool
}

func (s *memSink) Write(p []byte) (int, error) {
	if s.failWrites {
		return 0, errors.New("disk full")
	}
	return s.Buffer.Write(p)
}
func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

// richCatalog builds a catalog that exercises every field kind a snapshot
// must carry: maps, slices, nested maps of slices, durations, booleans,
// binary and empty KV values, flags, lock indexes and deleted rows (whose
// table index is above every row's).
func richCatalog(t testing.TB) *discovery.Store {
	t.Helper()
	s := discovery.NewStore()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.EnsureNode(1, &discovery.Node{ID: "9f0c", Name: "n1", Address: "10.0.0.1", Datacenter: "dc1", Meta: map[string]string{"rack": "r1", "empty": ""}}))
	must(s.EnsureNode(2, &discovery.Node{ID: "9f0d", Name: "n2", Address: "10.0.0.2", Datacenter: "dc1"}))
	must(s.EnsureNode(3, &discovery.Node{Name: "gone"}))
	must(s.EnsureService(4, &discovery.Instance{
		Node: "n1", ID: "web1", Service: "web", Tags: []string{"v1", "Prod"}, Address: "10.0.0.1", Port: 8080,
		Meta: map[string]string{"version": "1.2"}, Weights: discovery.Weights{Passing: 10, Warning: 1},
		EnableTagOverride: true, Source: "file:/etc/vmesh/web.hcl",
	}, []*discovery.Check{
		{CheckID: "web1-http", Name: "http", Notes: "n", Type: discovery.CheckHTTP, Definition: discovery.CheckDefinition{
			HTTP: "https://127.0.0.1:8080/health", Header: map[string][]string{"X-A": {"1", "2"}}, Method: "POST", Body: "{}",
			TLSServerName: "web", TLSSkipVerify: true, Interval: 10 * time.Second, Timeout: 1500 * time.Millisecond,
			DeregisterCriticalServiceAfter: 90 * time.Minute,
		}},
		{CheckID: "web1-ttl", Name: "ttl", Status: discovery.HealthWarning, Definition: discovery.CheckDefinition{TTL: 30 * time.Second}},
	}))
	must(s.EnsureService(5, &discovery.Instance{Node: "n2", ID: "db1", Service: "db", Port: 5432, Source: "api"},
		[]*discovery.Check{{CheckID: "db1-grpc", Definition: discovery.CheckDefinition{GRPC: "127.0.0.1:5432", GRPCUseTLS: true, Interval: time.Second}}}))
	must(s.EnsureCheck(6, &discovery.Check{Node: "n1", CheckID: "serf", Name: "Serf", Status: discovery.HealthPassing,
		Definition: discovery.CheckDefinition{TCP: "127.0.0.1:8301", Interval: 5 * time.Second}}))
	must(s.UpdateCheck(7, "n1", "web1-http", discovery.HealthPassing, "HTTP 200 OK"))
	must(s.KVApply(8, discovery.KVSet, &discovery.KVEntry{Key: "bin", Value: []byte{0, 1, 255}, Flags: 1 << 63}))
	must(s.KVApply(9, discovery.KVSet, &discovery.KVEntry{Key: "text", Value: []byte("héllo"), Flags: 3}))
	must(s.KVApply(10, discovery.KVSet, &discovery.KVEntry{Key: "empty"}))
	must(s.KVApply(11, discovery.KVCAS, &discovery.KVEntry{Key: "bin", Value: []byte{255, 0}, Flags: 7, ModifyIndex: 8}))
	must(s.KVApply(12, discovery.KVSet, &discovery.KVEntry{Key: "tmp"}))
	must(s.KVApply(13, discovery.KVDelete, &discovery.KVEntry{Key: "tmp"}))
	must(s.DeleteNode(14, "gone"))
	return s
}

func persist(t testing.TB, s *discovery.Store) []byte {
	t.Helper()
	f := &fsm{store: s, logger: testkit.Logger(t)}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	if !sink.closed || sink.cancelled {
		t.Fatalf("Persist: sink closed=%v cancelled=%v, want closed only", sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

func TestFSMSnapshotRoundTrip(t *testing.T) {
	src := richCatalog(t)
	data := persist(t, src)

	tests := []struct {
		name string
		dst  func(t *testing.T) *discovery.Store
	}{
		{"fresh store", func(*testing.T) *discovery.Store { return discovery.NewStore() }},
		{"store with other state is replaced", func(t *testing.T) *discovery.Store {
			s := discovery.NewStore()
			if err := s.EnsureNode(50, &discovery.Node{Name: "stale"}); err != nil {
				t.Fatal(err)
			}
			if err := s.KVApply(51, discovery.KVSet, &discovery.KVEntry{Key: "bin", Value: []byte("old")}); err != nil {
				t.Fatal(err)
			}
			return s
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := &fsm{store: tt.dst(t), logger: testkit.Logger(t)}
			if err := dst.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
				t.Fatal(err)
			}
			want, got := records(t, src), records(t, dst.store)
			if len(want) < 15 {
				t.Fatalf("source catalog has only %d records", len(want))
			}
			if !reflect.DeepEqual(got, want) {
				for i := range max(len(got), len(want)) {
					var g, w record
					if i < len(got) {
						g = got[i]
					}
					if i < len(want) {
						w = want[i]
					}
					if !reflect.DeepEqual(g, w) {
						t.Errorf("record %d:\n got %d %+v\nwant %d %+v", i, g.Type, g.Rec, w.Type, w.Rec)
					}
				}
			}
			if got, want := dst.store.LastIndex(), src.LastIndex(); got != want || want != 14 {
				t.Errorf("LastIndex = %d, want %d (source %d)", got, 14, want)
			}
			// The restored catalog answers reads through its indexes.
			reads := []struct {
				name string
				read func(s *discovery.Store) any
			}{
				{"nodes", func(s *discovery.Store) any { i, v, _ := s.Nodes(nil); return []any{i, v} }},
				{"node n1", func(s *discovery.Store) any { i, n, in, _ := s.Node(nil, "n1"); return []any{i, n, in} }},
				{"kv list", func(s *discovery.Store) any { i, v, _ := s.KVList(nil, ""); return []any{i, v} }},
				{"kv bin", func(s *discovery.Store) any { i, v, _ := s.KVGet(nil, "bin"); return []any{i, v} }},
				{"kv tmp (deleted)", func(s *discovery.Store) any { i, v, _ := s.KVGet(nil, "tmp"); return []any{i, v} }},
				{"checks", func(s *discovery.Store) any { i, v, _ := s.ChecksInState(nil, discovery.HealthAny); return []any{i, v} }},
				{"passing checks", func(s *discovery.Store) any {
					i, v, _ := s.ChecksInState(nil, discovery.HealthPassing)
					return []any{i, v}
				}},
				{"web health", func(s *discovery.Store) any {
					i, v, _ := s.CheckServiceNodes(nil, "WEB", []string{"prod"}, false)
					return []any{i, v}
				}},
				{"service checks", func(s *discovery.Store) any { i, v, _ := s.ServiceChecks(nil, "db"); return []any{i, v} }},
				{"service tags", func(s *discovery.Store) any { i, v, _ := s.ServiceTags(nil); return []any{i, v} }},
			}
			for _, r := range reads {
				if got, want := r.read(dst.store), r.read(src); !reflect.DeepEqual(got, want) {
					t.Errorf("%s: restored %+v, source %+v", r.name, got, want)
				}
			}
		})
	}
}

func TestFSMSnapshotIsPointInTime(t *testing.T) {
	src := richCatalog(t)
	f := &fsm{store: src, logger: testkit.Logger(t)}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	want := records(t, src)
	// Writes after Snapshot and before Persist must not show up.
	if err := src.KVApply(20, discovery.KVSet, &discovery.KVEntry{Key: "late"}); err != nil {
		t.Fatal(err)
	}
	if err := src.DeleteNode(21, "n1"); err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	dst := newTestFSM(t)
	if err := dst.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if got := records(t, dst.store); !reflect.DeepEqual(got, want) {
		t.Errorf("snapshot saw later writes: got %d records, want %d", len(got), len(want))
	}
}

func TestFSMSnapshotPersistSinkError(t *testing.T) {
	f := &fsm{store: richCatalog(t), logger: testkit.Logger(t)}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{failWrites: true}
	if err := snap.Persist(sink); err == nil {
		t.Fatal("Persist succeeded on a failing sink")
	}
	if !sink.cancelled || sink.closed {
		t.Errorf("sink cancelled=%v closed=%v, want cancelled only", sink.cancelled, sink.closed)
	}
}

func TestFSMRestoreWakesBlockedReader(t *testing.T) {
	data := persist(t, richCatalog(t)) // KV index 13
	dst := newTestFSM(t)
	if err := dst.store.KVApply(3, discovery.KVSet, &discovery.KVEntry{Key: "bin"}); err != nil {
		t.Fatal(err)
	}
	minIndex := dst.store.LastIndex()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reads := make(chan uint64, 16)
	done := make(chan error, 1)
	go func() {
		done <- dst.store.Blocking(ctx, minIndex, func(ws memdb.WatchSet) (uint64, error) {
			idx, _, err := dst.store.KVGet(ws, "bin")
			reads <- idx
			return idx, err
		})
	}()
	if got := <-reads; got != minIndex {
		t.Fatalf("first read at index %d, want %d", got, minIndex)
	}
	start := time.Now()
	if err := dst.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Second):
		t.Fatal("blocked reader still blocked 1s after Restore")
	}
	t.Logf("reader woke %v after Restore started", time.Since(start))
	if got := <-reads; got != 13 {
		t.Errorf("reader's read after Restore at index %d, want 13", got)
	}
}

func TestFSMRestoreBadStream(t *testing.T) {
	good := persist(t, richCatalog(t))
	if good[len(good)-1] != 0 {
		t.Fatalf("stream does not end with the end mark: % x", good[len(good)-8:])
	}
	tests := []struct {
		name    string
		data    []byte
		wantMsg string
	}{
		{"empty", nil, "snapshot version"},
		{"bad version", append([]byte{9}, good[1:]...), "unsupported snapshot version 9"},
		{"version only", good[:1], "end mark"},
		{"cut inside the first record", good[:4], "restoring snapshot"},
		{"cut in the middle", good[:len(good)/2], ""},
		{"no end mark", good[:len(good)-1], "end mark"},
		{"unknown record type", []byte{snapshotVersion, 0x77}, "record type 119"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newTestFSM(t)
			f.Apply(commandLog(t, 1, discovery.RegisterNodeRequest{Node: discovery.Node{Name: "keep"}}))
			f.Apply(commandLog(t, 2, discovery.KVRequest{Op: discovery.KVSet, Entry: discovery.KVEntry{Key: "keep", Value: []byte{1}}}))
			before := records(t, f.store)

			err := f.Restore(io.NopCloser(bytes.NewReader(tt.data)))
			if err == nil {
				t.Fatal("Restore succeeded")
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Restore = %v, want it to mention %q", err, tt.wantMsg)
			}
			if after := records(t, f.store); !reflect.DeepEqual(before, after) {
				t.Errorf("failed restore changed the catalog: %d records -> %d", len(before), len(after))
			}
			if got := f.store.LastIndex(); got != 2 {
				t.Errorf("LastIndex = %d, want 2", got)
			}
		})
	}
}

// Restore closes the stream it is given, on success and on failure.
func TestFSMRestoreClosesReader(t *testing.T) {
	good := persist(t, richCatalog(t))
	for _, data := range [][]byte{good, good[:3]} {
		rc := &closeRecorder{Reader: bytes.NewReader(data)}
		_ = newTestFSM(t).Restore(rc)
		if !rc.closed {
			t.Errorf("Restore of %d bytes did not close the reader", len(data))
		}
	}
}

type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }
