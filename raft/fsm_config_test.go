package raft

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
)

// configCatalog holds one entry of every kind, with every field kind a
// snapshot must carry (durations, float weights, nested slices and maps),
// a CAS update and a deleted entry.
func configCatalog(t testing.TB) *discovery.Store {
	t.Helper()
	s := discovery.NewStore()
	apply := func(idx uint64, op discovery.ConfigEntryOp, e discovery.ConfigEntry) {
		t.Helper()
		f := &fsm{store: s, logger: testkit.Logger(t)}
		if resp := f.Apply(commandLog(t, idx, discovery.ConfigEntryRequest{Op: op, Entry: e})); resp != nil {
			t.Fatalf("applying %s %s: %v", e.Kind, e.Name, resp)
		}
	}
	apply(1, discovery.ConfigEntryUpsert, discovery.ConfigEntry{Kind: discovery.KindServiceDefaults, Name: "web",
		Meta: map[string]string{"team": "a"}, Defaults: &discovery.ServiceDefaults{Protocol: "http", LocalConnectTimeoutMs: 250}})
	apply(2, discovery.ConfigEntryUpsert, discovery.ConfigEntry{Kind: discovery.KindServiceRouter, Name: "web",
		Router: &discovery.ServiceRouter{Routes: []discovery.ServiceRoute{{
			Match: &discovery.ServiceRouteMatch{HTTP: &discovery.ServiceRouteHTTPMatch{PathPrefix: "/admin", Methods: []string{"GET"},
				Header: []discovery.ServiceRouteHTTPMatchHeader{{Name: "x-debug", Exact: "1", Invert: true}}}},
			Destination: &discovery.ServiceRouteDestination{Service: "admin", RequestTimeout: discovery.Duration(2 * time.Second),
				NumRetries: 2, RetryOnStatusCodes: []uint32{503}, RequestHeaders: &discovery.HTTPHeaderModifiers{Set: map[string]string{"x-a": "1"}}},
		}}}})
	apply(3, discovery.ConfigEntryUpsert, discovery.ConfigEntry{Kind: discovery.KindServiceSplitter, Name: "web",
		Splitter: &discovery.ServiceSplitter{Splits: []discovery.ServiceSplit{{Weight: 90.5}, {Weight: 9.5, Service: "web-v2"}}}})
	apply(4, discovery.ConfigEntryUpsert, discovery.ConfigEntry{Kind: discovery.KindServiceResolver, Name: "web",
		Resolver: &discovery.ServiceResolver{ConnectTimeout: discovery.Duration(3 * time.Second),
			LoadBalancer: &discovery.LoadBalancer{Policy: discovery.LBRingHash, RingHashConfig: &discovery.RingHashConfig{MinimumRingSize: 64},
				HashPolicies: []discovery.HashPolicy{{Field: "cookie", FieldValue: "s", CookieConfig: &discovery.CookieConfig{TTL: discovery.Duration(time.Minute)}}}}}})
	apply(5, discovery.ConfigEntryUpsertCAS, discovery.ConfigEntry{Kind: discovery.KindServiceDefaults, Name: "web", ModifyIndex: 1,
		Defaults: &discovery.ServiceDefaults{Protocol: "grpc"}})
	apply(6, discovery.ConfigEntryUpsert, discovery.ConfigEntry{Kind: discovery.KindServiceDefaults, Name: "gone", Defaults: &discovery.ServiceDefaults{}})
	apply(7, discovery.ConfigEntryDelete, discovery.ConfigEntry{Kind: discovery.KindServiceDefaults, Name: "gone"})
	return s
}

// restoreRoundTrip persists src, restores it into a fresh FSM and checks
// that every record came back, and that src held wantN records of type rt
// (so the test exercises what it means to).
func restoreRoundTrip(t *testing.T, src *discovery.Store, rt discovery.RecordType, wantN int) *fsm {
	t.Helper()
	dst := &fsm{store: discovery.NewStore(), logger: testkit.Logger(t)}
	if err := dst.Restore(io.NopCloser(bytes.NewReader(persist(t, src)))); err != nil {
		t.Fatal(err)
	}
	want, got := records(t, src), records(t, dst.store)
	n := 0
	for _, r := range want {
		if r.Type == rt {
			n++
		}
	}
	if n != wantN {
		t.Fatalf("source catalog has %d records of type %d, want %d", n, rt, wantN)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("restored records differ:\n got %+v\nwant %+v", got, want)
	}
	return dst
}

func TestFSMConfigEntriesSnapshotRoundTrip(t *testing.T) {
	src := configCatalog(t)
	dst := restoreRoundTrip(t, src, discovery.RecordConfig, 4)
	for _, kind := range discovery.ConfigEntryKinds {
		gi, ge, _ := dst.store.ConfigEntries(nil, kind)
		wi, we, _ := src.ConfigEntries(nil, kind)
		if gi != wi || gi != 7 || !reflect.DeepEqual(ge, we) {
			t.Errorf("%s: restored %d %+v, source %d %+v", kind, gi, ge, wi, we)
		}
	}
	_, e, _ := dst.store.ConfigEntry(nil, discovery.KindServiceDefaults, "web")
	if e == nil || e.Defaults.Protocol != "grpc" || e.CreateIndex != 1 || e.ModifyIndex != 5 {
		t.Errorf("restored web defaults = %+v, want grpc created at 1, modified at 5", e)
	}

	// A failed CAS is the FSM's answer to the caller, and changes nothing.
	f := &fsm{store: dst.store, logger: testkit.Logger(t)}
	resp := f.Apply(commandLog(t, 8, discovery.ConfigEntryRequest{Op: discovery.ConfigEntryUpsertCAS,
		Entry: discovery.ConfigEntry{Kind: discovery.KindServiceDefaults, Name: "web", ModifyIndex: 1, Defaults: &discovery.ServiceDefaults{}}}))
	if err, _ := resp.(error); !errors.Is(err, discovery.ErrCASConflict) {
		t.Errorf("stale CAS = %v, want ErrCASConflict", resp)
	}
	if got := records(t, dst.store); !reflect.DeepEqual(got, records(t, src)) {
		t.Error("a failed CAS changed the catalog")
	}
}
