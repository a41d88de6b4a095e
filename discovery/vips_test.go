package discovery

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"
)

func TestStoreVIPApply(t *testing.T) {
	s := NewStore()
	steps := []struct {
		op           VIPOp
		service, ip  string
		err          error // nil: success
		wantServices map[string]string
	}{
		{VIPAllocate, "Web", "240.0.0.1", nil, map[string]string{"Web": "240.0.0.1"}},
		{VIPAllocate, "web", "240.0.0.1", nil, map[string]string{"Web": "240.0.0.1"}}, // same: no-op, first spelling stays
		{VIPAllocate, "db", "240.0.0.1", ErrVIPTaken, nil},
		{VIPAllocate, "WEB", "240.0.0.2", ErrVIPTaken, nil},
		{VIPAllocate, "db", "fd00::1", ErrInvalid, nil},
		{VIPAllocate, "db", "::ffff:240.0.0.9", ErrInvalid, nil},
		{VIPAllocate, "db", "not-an-ip", ErrInvalid, nil},
		{VIPAllocate, " ", "240.0.0.3", ErrInvalid, nil},
		{VIPOp("steal"), "db", "240.0.0.3", ErrInvalid, nil},
		{VIPAllocate, "db", "240.0.0.2", nil, map[string]string{"Web": "240.0.0.1", "db": "240.0.0.2"}},
		{VIPFree, "nothing", "", nil, map[string]string{"Web": "240.0.0.1", "db": "240.0.0.2"}},
		{VIPFree, "DB", "", nil, map[string]string{"Web": "240.0.0.1"}},
		{VIPAllocate, "api", "240.0.0.2", nil, map[string]string{"Web": "240.0.0.1", "api": "240.0.0.2"}},
	}
	last := uint64(0)
	for i, st := range steps {
		idx := uint64(i + 1)
		before, _, _ := s.VIPs(nil)
		err := s.VIPApply(idx, st.op, st.service, st.ip)
		if st.err != nil {
			if !errors.Is(err, st.err) {
				t.Fatalf("step %d: VIPApply(%s %q %q) = %v, want %v", i, st.op, st.service, st.ip, err, st.err)
			}
			if after, _, _ := s.VIPs(nil); after != before {
				t.Fatalf("step %d: a refused write moved the index %d -> %d", i, before, after)
			}
			continue
		}
		if err != nil {
			t.Fatalf("step %d: VIPApply(%s %q %q) = %v", i, st.op, st.service, st.ip, err)
		}
		i2, vips, _ := s.VIPs(nil)
		got := map[string]string{}
		for _, v := range vips {
			got[v.Service] = v.IP
		}
		if !reflect.DeepEqual(got, st.wantServices) {
			t.Fatalf("step %d: VIPs = %v, want %v", i, got, st.wantServices)
		}
		if i2 < last {
			t.Fatalf("step %d: index went back %d -> %d", i, last, i2)
		}
		last = i2
	}
	_, v, _ := s.ServiceVIP(nil, "WEB")
	if v == nil || v.IP != "240.0.0.1" || v.CreateIndex != 1 {
		t.Errorf("ServiceVIP(WEB) = %+v, want 240.0.0.1 created at 1", v)
	}
	if s.LastIndex() != uint64(len(steps)) {
		t.Errorf("LastIndex = %d, want %d", s.LastIndex(), len(steps))
	}
}

func TestStoreVIPWatchAndMeshState(t *testing.T) {
	s := NewStore()
	stNode(t, s, 1, "n1")
	stMust(t, s.EnsureService(2, &Instance{Node: "n1", ID: "o1", Service: "orders", Port: 80}, nil))
	stMust(t, s.EnsureService(3, &Instance{Node: "n1", ID: "o2", Service: "Orders", Port: 81}, nil))
	stMust(t, s.EnsureService(4, &Instance{Node: "n1", ID: "b1", Service: "billing", Port: 82}, nil))
	_, names, err := s.ServiceNames(nil)
	if err != nil || !reflect.DeepEqual(names, []string{"billing", "orders"}) {
		t.Fatalf("ServiceNames = %v, %v, want [billing orders]", names, err)
	}

	ws := memdb.NewWatchSet()
	if _, v, _ := s.ServiceVIP(ws, "orders"); v != nil {
		t.Fatalf("VIP before allocation: %+v", v)
	}
	ms := memdb.NewWatchSet()
	if _, err := s.MeshState(ms); err != nil {
		t.Fatal(err)
	}
	stMust(t, s.VIPApply(5, VIPAllocate, "orders", "240.0.0.1"))
	if ws.Watch(time.After(time.Second)) {
		t.Error("ServiceVIP watch did not fire on allocation")
	}
	if ms.Watch(time.After(time.Second)) {
		t.Error("MeshState watch did not fire on allocation")
	}
	st, _ := s.MeshState(nil)
	if st.Index != 5 || len(st.VIPs) != 1 || st.VIPs[0].IP != "240.0.0.1" {
		t.Errorf("MeshState = index %d, VIPs %+v, want index 5 and orders' VIP", st.Index, st.VIPs)
	}
}
