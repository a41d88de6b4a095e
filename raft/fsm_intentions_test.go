package raft

import (
	"errors"
	"reflect"
	"testing"

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
)

// intentionCatalog holds intentions at every precedence level, with Meta,
// times, a replacement (which keeps ID and creation) and a deleted pair.
func intentionCatalog(t testing.TB) *discovery.Store {
	t.Helper()
	s := discovery.NewStore()
	f := &fsm{store: s, logger: testkit.Logger(t)}
	apply := func(idx uint64, op discovery.IntentionOp, x discovery.Intention) {
		t.Helper()
		if resp := f.Apply(commandLog(t, idx, discovery.IntentionRequest{Op: op, Intention: x})); resp != nil {
			t.Fatalf("applying %s %s -> %s: %v", op, x.SourceName, x.DestinationName, resp)
		}
	}
	allow, deny := discovery.IntentionActionAllow, discovery.IntentionActionDeny
	apply(1, discovery.IntentionUpsert, discovery.Intention{ID: "a", SourceName: "web", DestinationName: "db", Action: allow,
		Description: "web reads db", Meta: map[string]string{"ticket": "42"}, CreatedAt: 1e18, UpdatedAt: 1e18})
	apply(2, discovery.IntentionUpsert, discovery.Intention{ID: "b", SourceName: "*", DestinationName: "db", Action: deny, CreatedAt: 2, UpdatedAt: 2})
	apply(3, discovery.IntentionUpsert, discovery.Intention{ID: "c", SourceName: "web", DestinationName: "*", Action: allow})
	apply(4, discovery.IntentionUpsert, discovery.Intention{ID: "d", SourceName: "*", DestinationName: "*", Action: deny})
	apply(5, discovery.IntentionUpsert, discovery.Intention{ID: "ignored", SourceName: "WEB", DestinationName: "db", Action: deny, UpdatedAt: 5})
	apply(6, discovery.IntentionUpsert, discovery.Intention{ID: "e", SourceName: "gone", DestinationName: "db", Action: allow})
	apply(7, discovery.IntentionDelete, discovery.Intention{SourceName: "gone", DestinationName: "db"})
	return s
}

func TestFSMIntentionsSnapshotRoundTrip(t *testing.T) {
	src := intentionCatalog(t)
	dst := restoreRoundTrip(t, src, discovery.RecordIntention, 4)
	gi, gl, _ := dst.store.Intentions(nil)
	wi, wl, _ := src.Intentions(nil)
	if gi != 7 || gi != wi || !reflect.DeepEqual(gl, wl) {
		t.Errorf("Intentions: restored %d %+v, source %d %+v", gi, gl, wi, wl)
	}
	_, x, _ := dst.store.IntentionExact(nil, "web", "db")
	wantX := &discovery.Intention{ID: "a", SourceName: "web", DestinationName: "db", Action: discovery.IntentionActionDeny,
		CreatedAt: 1e18, UpdatedAt: 5, CreateIndex: 1, ModifyIndex: 5}
	if !reflect.DeepEqual(x, wantX) {
		t.Errorf("restored web -> db = %+v, want %+v", x, wantX)
	}
	if _, byID, _ := dst.store.IntentionByID(nil, "a"); byID == nil || byID.DestinationName != "db" {
		t.Errorf("restored IntentionByID(a) = %+v", byID)
	}
	// The restored precedence and decisions are the source's.
	for _, p := range [][2]string{{"web", "db"}, {"api", "db"}, {"web", "cache"}, {"api", "cache"}} {
		g, _ := discovery.IntentionDecision(gl, p[0], p[1], true)
		w, _ := discovery.IntentionDecision(wl, p[0], p[1], true)
		if g != w {
			t.Errorf("%s -> %s: restored decides %v, source %v", p[0], p[1], g, w)
		}
	}
}

// A bad intention write is the FSM's answer to the caller, the same on
// every node, and changes nothing.
func TestFSMIntentionErrors(t *testing.T) {
	s := intentionCatalog(t)
	f := &fsm{store: s, logger: testkit.Logger(t)}
	before := records(t, s)
	for i, x := range []discovery.Intention{
		{ID: "z", SourceName: "a", DestinationName: "b", Action: "perhaps"},
		{ID: "a", SourceName: "x", DestinationName: "y", Action: discovery.IntentionActionAllow}, // ID taken
		{SourceName: "x", DestinationName: "y", Action: discovery.IntentionActionAllow},          // no ID
	} {
		resp := f.Apply(commandLog(t, uint64(10+i), discovery.IntentionRequest{Op: discovery.IntentionUpsert, Intention: x}))
		if err, ok := resp.(error); !ok || !errors.Is(err, discovery.ErrInvalid) {
			t.Errorf("Apply(%+v) = %v, want ErrInvalid", x, resp)
		}
	}
	if after := records(t, s); !reflect.DeepEqual(before, after) {
		t.Errorf("failed writes changed the catalog")
	}
}
