package httpapi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
)

// catalogWriter applies the catalog's own writes and autopilot's
// configuration to a store, as the FSM does.
type catalogWriter struct {
	mu  sync.Mutex
	s   *discovery.Store
	idx uint64
	// types are the command types applied, in order.
	types []discovery.MessageType
}

func (w *catalogWriter) Apply(_ context.Context, cmd discovery.Command) (uint64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.idx++
	w.types = append(w.types, cmd.MessageType())
	switch c := cmd.(type) {
	case discovery.CatalogRegisterRequest:
		return w.idx, w.s.CatalogRegister(w.idx, &c)
	case discovery.CatalogDeregisterRequest:
		return w.idx, w.s.CatalogDeregister(w.idx, &c)
	case discovery.AutopilotSetRequest:
		return w.idx, w.s.AutopilotSet(w.idx, &c)
	case *discovery.RegisterServiceRequest:
		return w.idx, w.s.EnsureService(w.idx, &c.Instance, c.Checks)
	case discovery.RegisterCheckRequest:
		return w.idx, w.s.EnsureCheck(w.idx, &c.Check)
	case discovery.DeregisterServiceRequest:
		return w.idx, w.s.DeleteService(w.idx, c.Node, c.ServiceID)
	case discovery.DeregisterCheckRequest:
		return w.idx, w.s.DeleteCheck(w.idx, c.Node, c.CheckID)
	}
	return 0, fmt.Errorf("catalogWriter: unexpected %T", cmd)
}

// fakeRaft records what the operator endpoints asked of the raft server.
type fakeRaft struct {
	mu       sync.Mutex
	removed  string
	leader   string
	restored []byte
	state    discovery.AutopilotState
}

func (f *fakeRaft) RaftConfiguration(context.Context) (discovery.RaftConfiguration, error) {
	return discovery.RaftConfiguration{Index: 7, Servers: []discovery.RaftServer{
		{ID: "00000001-0000-0000-0000-000000000000", Node: "n1", Address: "10.0.0.1:7400", Leader: true, Voter: true, ProtocolVersion: "3"},
	}}, nil
}
func (f *fakeRaft) RemoveRaftPeer(_ context.Context, id, addr string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed = id + "|" + addr
	return nil
}
func (f *fakeRaft) TransferLeader(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leader = id
	return nil
}
func (f *fakeRaft) AutopilotState(context.Context) (*discovery.AutopilotState, error) {
	st := f.state
	return &st, nil
}
func (f *fakeRaft) SaveSnapshot(_ context.Context, w io.Writer) (uint64, error) {
	io.WriteString(w, "archive")
	return 42, nil
}
func (f *fakeRaft) RestoreSnapshot(_ context.Context, archive []byte) error {
	if !bytes.HasPrefix(archive, []byte("archive")) {
		return WithStatus(http.StatusBadRequest, fmt.Errorf("bad snapshot archive"))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.restored = archive
	return nil
}

// newOperatorFixture is agent n1 (an agent's node, n1) with ACLs on,
// default deny, a writer that applies catalog and autopilot writes, and a
// fake raft server.
func newOperatorFixture(t *testing.T) (*aclFixture, *fakeRaft) {
	t.Helper()
	f := &aclFixture{s: discovery.NewStore()}
	if err := f.s.EnsureNode(f.next(), &discovery.Node{ID: "00000001-0000-0000-0000-000000000000", Name: "n1", Address: "10.0.0.1", Datacenter: "dc1"}); err != nil {
		t.Fatal(err)
	}
	if err := f.s.EnsureService(f.next(), &discovery.Instance{Node: "n1", ID: "web-n1", Service: "web", Port: 80, Weights: discovery.Weights{Passing: 1, Warning: 1}}, nil); err != nil {
		t.Fatal(err)
	}
	f.mgmt = "4d1b8a4e-0000-4000-8000-00000000000a"
	if err := f.s.ACLBootstrap(f.next(), &acl.Token{AccessorID: "4d1b8a4e-0000-4000-8000-00000000000b", SecretID: f.mgmt,
		Policies: []acl.Link{{ID: acl.ManagementPolicyID, Name: acl.ManagementPolicyName}}}, 0); err != nil {
		t.Fatal(err)
	}
	res, err := acl.NewResolver(acl.ResolverConfig{Store: f.s, Datacenter: "dc1", DefaultPolicy: acl.DefaultDeny})
	if err != nil {
		t.Fatal(err)
	}
	fr := &fakeRaft{state: discovery.AutopilotState{Healthy: true, FailureTolerance: 0, Leader: "s1", Voters: []string{"s1"},
		Servers: []discovery.AutopilotServer{{ID: "s1", Name: "n1", Address: "10.0.0.1:7400", NodeStatus: "alive", Healthy: true,
			Status: "leader", Leader: true, Voter: true, LastContact: 0}}}}
	f.w = &catalogWriter{s: f.s, idx: 1000}
	a := &API{Store: f.s, Writer: f.w, Cluster: fakeCluster{},
		NodeName: "n1", NodeID: "00000001-0000-0000-0000-000000000000", Datacenter: "dc1", Version: "test",
		ACL: storeResolver{res}, Raft: fr}
	mux := http.NewServeMux()
	a.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	f.base = srv.URL
	return f, fr
}

func extRegistration() *api.CatalogRegistration {
	return &api.CatalogRegistration{
		Node: "ext1", Address: "192.0.2.10", TaggedAddresses: map[string]string{"wan": "198.51.100.10"},
		NodeMeta: map[string]string{"external-node": "true"},
		Service:  &api.AgentService{ID: "pg-1", Service: "pg", Tags: []string{"primary"}, Port: 5432},
		Checks: api.HealthChecks{{CheckID: "pg-alive", Name: "pg alive", Status: api.HealthCritical, ServiceID: "pg-1",
			Output: "connection refused"}},
	}
}

// TestCatalogRegisterExternalNode: consul/api's Catalog().Register makes
// an external node with its service and check, visible in the catalog
// and health endpoints with the check's output; Deregister removes a
// service, then the node.
func TestCatalogRegisterExternalNode(t *testing.T) {
	f, _ := newOperatorFixture(t)
	c := f.client(t, f.mgmt)
	if _, err := c.Catalog().Register(extRegistration(), nil); err != nil {
		t.Fatalf("register: %v", err)
	}
	node, _, err := c.Catalog().Node("ext1", nil)
	if err != nil || node == nil {
		t.Fatalf("node: %v %v", node, err)
	}
	if node.Node.Address != "192.0.2.10" || node.Node.TaggedAddresses["wan"] != "198.51.100.10" || node.Node.Meta["external-node"] != "true" {
		t.Errorf("node = %+v", node.Node)
	}
	if s := node.Services["pg-1"]; s == nil || s.Service != "pg" || s.Port != 5432 {
		t.Errorf("services = %+v", node.Services)
	}
	entries, _, err := c.Health().Service("pg", "", false, nil)
	if err != nil || len(entries) != 1 {
		t.Fatalf("health: %v %v", entries, err)
	}
	var got []string
	for _, chk := range entries[0].Checks {
		got = append(got, chk.CheckID+"="+chk.Status+":"+chk.Output)
	}
	if want := "pg-alive=critical:connection refused"; strings.Join(got, ",") != want {
		t.Errorf("checks = %v, want %s", got, want)
	}

	if _, err := c.Catalog().Deregister(&api.CatalogDeregistration{Node: "ext1", ServiceID: "pg-1"}, nil); err != nil {
		t.Fatalf("deregister service: %v", err)
	}
	if _, in, _ := f.s.Instance(nil, "ext1", "pg-1"); in != nil {
		t.Errorf("pg-1 still registered")
	}
	if _, chk, _ := f.s.Check(nil, "ext1", "pg-alive"); chk != nil {
		t.Errorf("pg-1's check still registered")
	}
	if _, err := c.Catalog().Deregister(&api.CatalogDeregistration{Node: "ext1"}, nil); err != nil {
		t.Fatalf("deregister node: %v", err)
	}
	if _, n, _, _ := f.s.Node(nil, "ext1"); n != nil {
		t.Errorf("ext1 still registered")
	}
}

// TestCatalogRegisterACL: Consul's rules (node:write on the node,
// service:write on the service), and another agent's node (n2; the
// request reaches n1) refused whatever the token.
func TestCatalogRegisterACL(t *testing.T) {
	f, _ := newOperatorFixture(t)
	addAgentNode(t, f, "n2")
	serviceOnly := f.token(t, `service "pg" { policy = "write" }`)
	nodeOnly := f.token(t, `node "ext1" { policy = "write" }`)
	both := f.token(t, `node "ext1" { policy = "write" } service "pg" { policy = "write" }`)
	otherNode := f.token(t, `node "ext2" { policy = "write" } service "pg" { policy = "write" }`)

	for _, tc := range []struct {
		name, token string
		reg         func() *api.CatalogRegistration
		wantErr     string
	}{
		{"service:write alone cannot create a node", serviceOnly, extRegistration, "403"},
		{"node:write alone cannot write a service", nodeOnly, extRegistration, "403"},
		{"node:write on another node", otherNode, extRegistration, "403"},
		{"anonymous", "", extRegistration, "403"},
		{"another agent's node, management token", f.mgmt, func() *api.CatalogRegistration {
			r := extRegistration()
			r.Node, r.Address = "n2", "10.0.0.2"
			return r
		}, "run by a vmesh agent"},
		{"reserved meta", f.mgmt, func() *api.CatalogRegistration {
			r := extRegistration()
			r.NodeMeta = map[string]string{"vmesh-role": "server"}
			return r
		}, "vmesh- prefix is reserved"},
		{"node and service write", both, extRegistration, ""},
		{"existing node, SkipNodeUpdate, service:write alone", serviceOnly, func() *api.CatalogRegistration {
			r := extRegistration()
			r.SkipNodeUpdate, r.Checks = true, nil
			r.Service.ID, r.Service.Port = "pg-2", 5433
			return r
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.client(t, tc.token).Catalog().Register(tc.reg(), nil)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("err = %v, want one with %q", err, tc.wantErr)
			}
		})
	}
	// The other agent's node and service are as they were.
	if _, n, ins, _ := f.s.Node(nil, "n2"); n == nil || n.External || len(ins) != 1 || ins[0].ID != "web-n2" {
		t.Errorf("n2 = %+v %v", n, ins)
	}
	for _, tc := range []struct {
		name, token string
		dereg       api.CatalogDeregistration
		wantErr     string
	}{
		{"another agent's service", f.mgmt, api.CatalogDeregistration{Node: "n2", ServiceID: "web-n2"}, "run by a vmesh agent"},
		{"another agent's node", f.mgmt, api.CatalogDeregistration{Node: "n2"}, "run by a vmesh agent"},
		{"service:write cannot remove the node", serviceOnly, api.CatalogDeregistration{Node: "ext1"}, "403"},
		{"node:write cannot remove a service", nodeOnly, api.CatalogDeregistration{Node: "ext1", ServiceID: "pg-1"}, "403"},
		{"service:write removes its service", serviceOnly, api.CatalogDeregistration{Node: "ext1", ServiceID: "pg-2"}, ""},
		{"node:write removes the node", nodeOnly, api.CatalogDeregistration{Node: "ext1"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.client(t, tc.token).Catalog().Deregister(&tc.dereg, nil)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("err = %v, want one with %q", err, tc.wantErr)
			}
		})
	}
	if _, n, ins, _ := f.s.Node(nil, "n2"); n == nil || len(ins) != 1 {
		t.Errorf("n2 after deregistrations = %+v %v", n, ins)
	}
}

// TestCatalogRegisterBadInput: each malformed registration is a 400
// naming its field.
func TestCatalogRegisterBadInput(t *testing.T) {
	f, _ := newOperatorFixture(t)
	for _, tc := range []struct{ body, want string }{
		{`{"Address":"1.2.3.4"}`, "field Node"},
		{`{"Node":"x"}`, "field Address"},
		{`{"Node":"x","Address":"1.2.3.4","ID":"nope"}`, "field ID"},
		{`{"Node":"x","Address":"1.2.3.4","Service":{"Port":80}}`, "field Service.Service"},
		{`{"Node":"x","Address":"1.2.3.4","Service":{"Service":"a","Kind":"sidecar"}}`, "field Service.Kind"},
		{`{"Node":"x","Address":"1.2.3.4","Service":{"Service":"a","Kind":"connect-proxy","Port":1}}`, "field Service.Proxy.DestinationServiceName"},
		{`{"Node":"x","Address":"1.2.3.4","Service":{"Service":"a","Kind":"connect-proxy","Proxy":{"DestinationServiceName":"b"}}}`, "field Service.Port"},
		{`{"Node":"x","Address":"1.2.3.4","Service":{"Service":"a","Kind":"mesh-gateway","Port":1,"Connect":{"Native":true}}}`, "field Service.Connect.Native"},
		{`{"Node":"x","Address":"1.2.3.4","Service":{"Service":"a","Connect":{"SidecarService":{}}}}`, "field Service.Connect.SidecarService"},
		{`{"Node":"x","Address":"1.2.3.4","Service":{"Service":"a","Proxy":{"DestinationServiceName":"b"}}}`, "field Service.Proxy"},
		{`{"Node":"x","Address":"1.2.3.4","Check":{"CheckID":"c","Status":"sad"}}`, "field Status"},
		{`{"Node":"x","Address":"1.2.3.4","Check":{"CheckID":"c","ServiceID":"none"}}`, `ServiceID "none" is not registered`},
		{`{"Node":"x","Address":1}`, "field Address"},
	} {
		req, _ := http.NewRequest(http.MethodPut, f.base+"/v1/catalog/register", strings.NewReader(tc.body))
		req.Header.Set("X-Consul-Token", f.mgmt)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if (resp.StatusCode != 400 && resp.StatusCode != 404) || !strings.Contains(string(b), tc.want) {
			t.Errorf("%s: %d %s, want 400/404 with %q", tc.body, resp.StatusCode, b, tc.want)
		}
	}
	if _, n, _, _ := f.s.Node(nil, "x"); n != nil {
		t.Errorf("a refused registration left node x: %+v", n)
	}
}

// TestOperatorEndpointsACL: operator:read reads, operator:write changes,
// and snapshots need acl:write, as in Consul; the answers are consul/api's
// shapes.
func TestOperatorEndpointsACL(t *testing.T) {
	f, fr := newOperatorFixture(t)
	reader := f.client(t, f.token(t, `operator = "read"`))
	writer := f.client(t, f.token(t, `operator = "write"`))
	nobody := f.client(t, f.token(t, `node_prefix "" { policy = "read" }`))
	mgmt := f.client(t, f.mgmt)

	conf, err := reader.Operator().RaftGetConfiguration(nil)
	if err != nil || len(conf.Servers) != 1 || conf.Servers[0].Node != "n1" || !conf.Servers[0].Leader || conf.Servers[0].ProtocolVersion != "3" {
		t.Errorf("raft configuration = %+v, %v", conf, err)
	}
	if _, err := nobody.Operator().RaftGetConfiguration(nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("raft configuration without operator:read: %v", err)
	}
	if err := reader.Operator().RaftRemovePeerByID("s2", nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("remove peer with operator:read: %v", err)
	}
	if err := writer.Operator().RaftRemovePeerByAddress("10.0.0.2:7400", nil); err != nil || fr.removed != "|10.0.0.2:7400" {
		t.Errorf("remove peer: %v, removed %q", err, fr.removed)
	}
	if _, err := reader.Operator().RaftLeaderTransfer("s2", nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("transfer with operator:read: %v", err)
	}
	if out, err := writer.Operator().RaftLeaderTransfer("s2", nil); err != nil || !out.Success || fr.leader != "s2" {
		t.Errorf("transfer: %+v %v, leader %q", out, err, fr.leader)
	}
	// Neither or both of id and address: 400.
	code, _, body := f.do(t, f.mgmt, http.MethodDelete, "/v1/operator/raft/peer", "")
	if code != 400 || !strings.Contains(body, "?id") {
		t.Errorf("remove peer without id: %d %s", code, body)
	}

	// Autopilot: the default, then a CAS write that must name its index.
	ap, err := reader.Operator().AutopilotGetConfiguration(nil)
	if err != nil || !ap.CleanupDeadServers || ap.LastContactThreshold.Duration() != 2*time.Second || ap.ModifyIndex != 0 {
		t.Fatalf("autopilot default = %+v, %v", ap, err)
	}
	ap.LastContactThreshold = api.NewReadableDuration(500 * time.Millisecond)
	ap.MaxTrailingLogs = 250
	if err := reader.Operator().AutopilotSetConfiguration(ap, nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("autopilot set with operator:read: %v", err)
	}
	if ok, err := writer.Operator().AutopilotCASConfiguration(ap, nil); err != nil || !ok {
		t.Fatalf("autopilot CAS at 0: %v %v", ok, err)
	}
	if ok, err := writer.Operator().AutopilotCASConfiguration(ap, nil); err != nil || ok {
		t.Errorf("autopilot CAS at a stale index: %v %v, want false", ok, err)
	}
	got, err := reader.Operator().AutopilotGetConfiguration(nil)
	if err != nil || got.LastContactThreshold.Duration() != 500*time.Millisecond || got.MaxTrailingLogs != 250 || got.ModifyIndex == 0 {
		t.Errorf("autopilot after set = %+v, %v", got, err)
	}
	bad := *got
	bad.LastContactThreshold = api.NewReadableDuration(0)
	if err := writer.Operator().AutopilotSetConfiguration(&bad, nil); err == nil || !strings.Contains(err.Error(), "LastContactThreshold") {
		t.Errorf("autopilot with a zero threshold: %v", err)
	}
	// A PUT of only some fields (consul/api's own test sends just
	// CleanupDeadServers) replaces the rest with the defaults, not zeros.
	if code, _, body := f.do(t, f.mgmt, http.MethodPut, "/v1/operator/autopilot/configuration", `{"CleanupDeadServers": false}`); code != 200 {
		t.Errorf("autopilot set of one field: %d %s", code, body)
	}
	def := discovery.DefaultAutopilotConfig()
	got, err = reader.Operator().AutopilotGetConfiguration(nil)
	if err != nil || got.CleanupDeadServers || got.LastContactThreshold.Duration() != def.LastContactThreshold ||
		got.ServerStabilizationTime.Duration() != def.ServerStabilizationTime || got.MaxTrailingLogs != def.MaxTrailingLogs {
		t.Errorf("autopilot after a one-field set = %+v, %v; want CleanupDeadServers false and the defaults", got, err)
	}
	health, err := reader.Operator().AutopilotServerHealth(nil)
	if err != nil || !health.Healthy || len(health.Servers) != 1 || !health.Servers[0].Leader {
		t.Errorf("autopilot health = %+v, %v", health, err)
	}
	state, err := reader.Operator().AutopilotState(nil)
	if err != nil || state.Leader != "s1" || state.Servers["s1"].Status != api.AutopilotServerLeader {
		t.Errorf("autopilot state = %+v, %v", state, err)
	}
	fr.state.Healthy = false
	if code, _, _ := f.do(t, f.mgmt, http.MethodGet, "/v1/operator/autopilot/health", ""); code != http.StatusTooManyRequests {
		t.Errorf("unhealthy: %d, want 429", code)
	}

	// Snapshots: acl:write, which operator:write is not.
	if _, _, err := writer.Snapshot().Save(nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("snapshot save with operator:write: %v", err)
	}
	if err := writer.Snapshot().Restore(nil, strings.NewReader("archive")); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("snapshot restore with operator:write: %v", err)
	}
	rc, qm, err := mgmt.Snapshot().Save(nil)
	if err != nil {
		t.Fatalf("snapshot save: %v", err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "archive" || qm.LastIndex != 42 || !qm.KnownLeader {
		t.Errorf("snapshot = %q at %d, known leader %v", b, qm.LastIndex, qm.KnownLeader)
	}
	if err := mgmt.Snapshot().Restore(nil, strings.NewReader("archive-2")); err != nil || string(fr.restored) != "archive-2" {
		t.Errorf("restore: %v, restored %q", err, fr.restored)
	}
	if err := mgmt.Snapshot().Restore(nil, strings.NewReader("junk")); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("restore of junk: %v", err)
	}
}

// TestCoordinates: no coordinates, in consul/api's shapes; one node's is
// a 404; an update is refused as not stored.
func TestCoordinates(t *testing.T) {
	f, _ := newOperatorFixture(t)
	c := f.client(t, f.mgmt)
	dcs, err := c.Coordinate().Datacenters()
	if err != nil || len(dcs) != 1 || dcs[0].Datacenter != "dc1" || len(dcs[0].Coordinates) != 0 {
		t.Errorf("datacenters = %+v, %v", dcs, err)
	}
	nodes, qm, err := c.Coordinate().Nodes(nil)
	if err != nil || len(nodes) != 0 || qm.LastIndex == 0 {
		t.Errorf("nodes = %+v, %+v, %v", nodes, qm, err)
	}
	if _, _, err := c.Coordinate().Node("n1", nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("node: %v, want a 404", err)
	}
	if _, _, err := f.client(t, "").Coordinate().Node("n1", nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("node without node:read: %v, want a 403", err)
	}
	if _, err := c.Coordinate().Update(&api.CoordinateEntry{Node: "n1"}, nil); err == nil || !strings.Contains(err.Error(), "501") {
		t.Errorf("update: %v, want a 501", err)
	}
}

// do is a raw request with a token.
func (f *aclFixture) do(t *testing.T, token, method, path, body string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(method, f.base+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("X-Consul-Token", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}
