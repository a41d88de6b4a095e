package local

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
)

// countingWriter applies service commands straight to a store, as raft
// would, and counts them: an unchanged sync must write nothing.
type countingWriter struct {
	s      *discovery.Store
	idx    uint64
	writes int
}

func (w *countingWriter) Apply(_ context.Context, cmd discovery.Command) (uint64, error) {
	w.idx++
	w.writes++
	switch c := cmd.(type) {
	case *discovery.RegisterServiceRequest:
		return w.idx, w.s.RegisterService(w.idx, c)
	case discovery.DeregisterServiceRequest:
		return w.idx, w.s.DeleteService(w.idx, c.Node, c.ServiceID)
	}
	return 0, fmt.Errorf("countingWriter: unexpected %T", cmd)
}

// TestFileServicesSync: files' services are registered, a second sync of
// the same definitions writes nothing, a changed one is rewritten, a gone
// one is deregistered, and an instance the API registered is left alone.
func TestFileServicesSync(t *testing.T) {
	ctx := context.Background()
	s := discovery.NewStore()
	if err := s.EnsureNode(1, &discovery.Node{Name: "n1", Address: "10.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	w := &countingWriter{s: s, idx: 1}
	if err := s.EnsureService(2, &discovery.Instance{Node: "n1", ID: "api-1", Service: "api", Source: "api"}, nil); err != nil {
		t.Fatal(err)
	}
	fs := &FileServices{Store: s, Writer: w, Node: "n1", UserPorts: &discovery.UserPortAllocator{}, Logger: testkit.Discard()}
	build := func(defs ...discovery.ServiceRegistration) []*discovery.RegisterServiceRequest {
		t.Helper()
		var fds []FileDefinition
		for i, d := range defs {
			d.Line = i + 1
			fds = append(fds, FileDefinition{File: "/etc/vmesh/services.d/a.hcl", Service: d})
		}
		reqs, err := BuildFileServices("n1", fds)
		if err != nil {
			t.Fatal(err)
		}
		return reqs
	}
	web := discovery.ServiceRegistration{Name: "web", Port: 80, Protocol: discovery.ProtocolHTTP,
		Check: &discovery.CheckType{TCP: "127.0.0.1:80", Interval: discovery.Duration(10 * time.Second)}}
	db := discovery.ServiceRegistration{Name: "db", Port: 5432}
	ids := func() map[string]string {
		_, insts, err := s.NodeInstances(nil, "n1")
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, in := range insts {
			out[in.ID] = in.Source
		}
		return out
	}

	if err := fs.Sync(ctx, build(web, db)); err != nil {
		t.Fatal(err)
	}
	if got := ids(); len(got) != 3 || got["web"] != "file:/etc/vmesh/services.d/a.hcl" || got["api-1"] != "api" {
		t.Fatalf("after the first sync: %v", got)
	}
	if _, in, _ := s.Instance(nil, "n1", "web"); in.Protocol != discovery.ProtocolHTTP || in.Meta[discovery.MetaProtocol] != discovery.ProtocolHTTP {
		t.Errorf("web's protocol %q meta %v; want http in both", in.Protocol, in.Meta)
	}
	before := w.writes
	if err := fs.Sync(ctx, build(web, db)); err != nil {
		t.Fatal(err)
	}
	if w.writes != before {
		t.Errorf("an unchanged sync wrote %d times", w.writes-before)
	}
	web.Port = 81
	if err := fs.Sync(ctx, build(web)); err != nil {
		t.Fatal(err)
	}
	if got := ids(); len(got) != 2 || got["db"] != "" || got["api-1"] != "api" {
		t.Errorf("after db's definition went: %v", got)
	}
	if _, in, _ := s.Instance(nil, "n1", "web"); in.Port != 81 {
		t.Errorf("web's port %d after its change, want 81", in.Port)
	}
}

// TestFileServicesSidecar: a file's sidecar_service writes the sidecar
// record with its service; an unchanged sync writes nothing, the record
// is not taken for a file service whose definition is gone, and it goes
// when its sidecar_service or its service does.
func TestFileServicesSidecar(t *testing.T) {
	ctx := context.Background()
	s := discovery.NewStore()
	if err := s.EnsureNode(1, &discovery.Node{Name: "n1", Address: "10.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	w := &countingWriter{s: s, idx: 1}
	fs := &FileServices{Store: s, Writer: w, Node: "n1", UserPorts: &discovery.UserPortAllocator{}, Logger: testkit.Discard()}
	sync := func(defs ...discovery.ServiceRegistration) {
		t.Helper()
		var fds []FileDefinition
		for i, d := range defs {
			d.Line = i + 1
			fds = append(fds, FileDefinition{File: "/etc/vmesh/services.d/a.hcl", Service: d})
		}
		reqs, err := BuildFileServices("n1", fds)
		if err != nil {
			t.Fatal(err)
		}
		if err := fs.Sync(ctx, reqs); err != nil {
			t.Fatal(err)
		}
	}
	ids := func() []string {
		_, insts, err := s.NodeInstances(nil, "n1")
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, in := range insts {
			out = append(out, in.ID)
		}
		return out
	}
	web := discovery.ServiceRegistration{Name: "web", Port: 80, Connect: &discovery.ServiceConnect{
		SidecarService: &discovery.ServiceRegistration{Tags: []string{"sc"}}}}
	sync(web)
	if got := ids(); len(got) != 2 || got[1] != "web-sidecar-proxy" {
		t.Fatalf("after the first sync: %v", got)
	}
	before := w.writes
	sync(web)
	if w.writes != before {
		t.Errorf("an unchanged sync wrote %d times", w.writes-before)
	}
	if got := ids(); len(got) != 2 {
		t.Errorf("after the second sync: %v", got)
	}
	web.Connect.SidecarService.Tags = []string{"changed"}
	sync(web)
	if _, in, _ := s.Instance(nil, "n1", "web-sidecar-proxy"); in == nil || len(in.Tags) != 1 || in.Tags[0] != "changed" {
		t.Errorf("after the sidecar's tags changed: %+v", in)
	}
	web.Connect = nil
	sync(web)
	if got := ids(); len(got) != 1 || got[0] != "web" {
		t.Errorf("after sidecar_service went: %v", got)
	}
	web.Connect = &discovery.ServiceConnect{SidecarService: &discovery.ServiceRegistration{}}
	sync(web)
	sync()
	if got := ids(); len(got) != 0 {
		t.Errorf("after the definition went: %v", got)
	}
}
