package raft

import (
	"bytes"
	"io"
	"reflect"
	"testing"

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
)

// TestFSMSidecarRecord: a registration's sidecar record goes through the
// log with its service, survives a snapshot and restore as written (so it
// still knows its service), and a deregistration applied afterwards
// removes both.
func TestFSMSidecarRecord(t *testing.T) {
	f := newTestFSM(t)
	if r := f.Apply(commandLog(t, 1, discovery.RegisterNodeRequest{Node: discovery.Node{Name: "n1", Address: "10.0.0.1"}})); r != nil {
		t.Fatal(r)
	}
	reg := &discovery.ServiceRegistration{Name: "web", Port: 8080, Connect: &discovery.ServiceConnect{SidecarService: &discovery.ServiceRegistration{}}}
	req, err := reg.Build("n1", "api")
	if err != nil {
		t.Fatal(err)
	}
	if r := f.Apply(commandLog(t, 2, req)); r != nil {
		t.Fatal(r)
	}
	_, want, _ := f.store.Instance(nil, "n1", "web-sidecar-proxy")
	if want == nil || want.SidecarFor != "web" || want.Port != discovery.MeshPort {
		t.Fatalf("sidecar record after apply: %+v", want)
	}

	dst := &fsm{store: discovery.NewStore(), logger: testkit.Logger(t)}
	if err := dst.Restore(io.NopCloser(bytes.NewReader(persist(t, f.store)))); err != nil {
		t.Fatal(err)
	}
	if _, got, _ := dst.store.Instance(nil, "n1", "web-sidecar-proxy"); !reflect.DeepEqual(got, want) {
		t.Fatalf("restored sidecar record %+v, want %+v", got, want)
	}
	if r := dst.Apply(commandLog(t, 3, discovery.DeregisterServiceRequest{Node: "n1", ServiceID: "web"})); r != nil {
		t.Fatal(r)
	}
	if _, insts, _ := dst.store.NodeInstances(nil, "n1"); len(insts) != 0 {
		t.Errorf("after deregistering web on the restored catalog: %+v", insts)
	}
}
