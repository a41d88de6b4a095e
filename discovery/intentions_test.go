package discovery

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-memdb"
)

func ixn(src, dst, action string) *Intention {
	return &Intention{ID: "id-" + src + "-" + dst, SourceName: src, DestinationName: dst, Action: action}
}

func TestIntentionPrecedence(t *testing.T) {
	for _, tc := range []struct {
		src, dst string
		want     int
	}{
		{"web", "db", 9},
		{"*", "db", 8},
		{"web", "*", 6},
		{"*", "*", 5},
	} {
		if got := IntentionPrecedence(tc.src, tc.dst); got != tc.want {
			t.Errorf("IntentionPrecedence(%s, %s) = %d, want %d", tc.src, tc.dst, got, tc.want)
		}
	}
	// Listing order: precedence, then names.
	list := []*Intention{ixn("*", "*", "deny"), ixn("web", "*", "deny"), ixn("b", "db", "allow"), ixn("*", "db", "allow"), ixn("A", "db", "deny")}
	SortIntentions(list)
	var got []string
	for _, x := range list {
		got = append(got, x.SourceName+">"+x.DestinationName)
	}
	if want := []string{"A>db", "b>db", "*>db", "web>*", "*>*"}; !reflect.DeepEqual(got, want) {
		t.Errorf("SortIntentions = %v, want %v", got, want)
	}
}

// TestIntentionDecision is the precedence table: the most specific
// matching intention decides (exact > wildcard source > wildcard
// destination > both), the default only when none matches.
func TestIntentionDecision(t *testing.T) {
	A, D := IntentionActionAllow, IntentionActionDeny
	cases := []struct {
		name         string
		ixns         []*Intention
		src, dst     string
		defaultAllow bool
		want         bool
		by           string // "src>dst" of the deciding intention, "" for the default
	}{
		{"none, default deny", nil, "web", "db", false, false, ""},
		{"none, default allow", nil, "web", "db", true, true, ""},
		{"exact allow", []*Intention{ixn("web", "db", A)}, "web", "db", false, true, "web>db"},
		{"exact deny beats default allow", []*Intention{ixn("web", "db", D)}, "web", "db", true, false, "web>db"},
		{"other pair does not match", []*Intention{ixn("api", "db", A), ixn("web", "cache", A)}, "web", "db", false, false, ""},
		{"names are case-insensitive", []*Intention{ixn("Web", "DB", A)}, "web", "db", false, true, "Web>DB"},
		{"exact beats wildcard source", []*Intention{ixn("*", "db", A), ixn("web", "db", D)}, "web", "db", true, false, "web>db"},
		{"wildcard source applies to others", []*Intention{ixn("*", "db", A), ixn("web", "db", D)}, "api", "db", false, true, "*>db"},
		{"wildcard source beats wildcard destination", []*Intention{ixn("web", "*", D), ixn("*", "db", A)}, "web", "db", false, true, "*>db"},
		{"wildcard destination beats both", []*Intention{ixn("*", "*", A), ixn("web", "*", D)}, "web", "db", true, false, "web>*"},
		{"both wildcards", []*Intention{ixn("*", "*", D)}, "web", "db", true, false, "*>*"},
		{"both wildcards allow over default deny", []*Intention{ixn("*", "*", A)}, "web", "db", false, true, "*>*"},
		{"all four levels", []*Intention{ixn("*", "*", D), ixn("web", "*", A), ixn("*", "db", D), ixn("web", "db", A)}, "web", "db", false, true, "web>db"},
		{"all four levels, other source", []*Intention{ixn("*", "*", D), ixn("web", "*", A), ixn("*", "db", D), ixn("web", "db", A)}, "api", "db", true, false, "*>db"},
		{"all four levels, other destination", []*Intention{ixn("*", "*", D), ixn("web", "*", A), ixn("*", "db", D), ixn("web", "db", A)}, "web", "cache", false, true, "web>*"},
		{"all four levels, neither", []*Intention{ixn("*", "*", D), ixn("web", "*", A), ixn("*", "db", D), ixn("web", "db", A)}, "api", "cache", true, false, "*>*"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, by := IntentionDecision(tc.ixns, tc.src, tc.dst, tc.defaultAllow)
			gotBy := ""
			if by != nil {
				gotBy = by.SourceName + ">" + by.DestinationName
			}
			if got != tc.want || gotBy != tc.by {
				t.Errorf("IntentionDecision(%s -> %s, default allow %v) = %v by %q, want %v by %q", tc.src, tc.dst, tc.defaultAllow, got, gotBy, tc.want, tc.by)
			}
		})
	}
}

func TestParseIntentionName(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"web", "web", ""},
		{"*", "*", ""},
		{"default/web", "web", ""},
		{"default/default/*", "*", ""},
		{"", "", "source: missing"},
		{"web*", "", "only the whole name"},
		{"team/web", "", "only the default namespace"},
		{"a/b/c/d", "", "not a service name"},
		{"we b", "", "white space"},
	} {
		got, err := ParseIntentionName("source", tc.in)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("ParseIntentionName(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		case tc.err != "" && (err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseIntentionName(%q) = %q, %v; want an ErrInvalid mentioning %q", tc.in, got, err, tc.err)
		}
	}
}

func TestDecodeIntention(t *testing.T) {
	// What consul/api's IntentionUpsert sends, byte for byte.
	stock, _ := json.Marshal(&api.Intention{SourceName: "web", DestinationName: "db", Action: api.IntentionActionDeny,
		Description: "no", Meta: map[string]string{"team": "a"}})
	got, err := DecodeIntention(stock, "web", "db")
	want := &Intention{SourceName: "web", DestinationName: "db", Action: "deny", Description: "no", Meta: map[string]string{"team": "a"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("consul/api body: %+v, %v; want %+v", got, err, want)
	}
	for _, tc := range []struct {
		name, body string
		want       []string // each must appear in the error
	}{
		{"no action", `{}`, []string{"Action: missing"}},
		{"empty body", ``, []string{"Action: missing"}},
		{"bad action", `{"Action":"permit"}`, []string{`Action: "permit"`}},
		{"unknown field", `{"Action":"allow","Actoin":"deny"}`, []string{`"Actoin"`}},
		{"wrong type", `{"Action":"allow","Meta":["x"]}`, []string{"Meta"}},
		{"ID set", `{"Action":"allow","ID":"abc"}`, []string{"ID: must be empty"}},
		{"source mismatch", `{"Action":"allow","SourceName":"api"}`, []string{"SourceName", `?source="web"`}},
		{"destination mismatch", `{"Action":"allow","DestinationName":"cache"}`, []string{"DestinationName"}},
		{"namespace", `{"Action":"allow","SourceNS":"team"}`, []string{"SourceNS"}},
		{"partition", `{"Action":"allow","DestinationPartition":"p"}`, []string{"DestinationPartition"}},
		{"peer", `{"Action":"allow","SourcePeer":"other"}`, []string{"SourcePeer"}},
		{"source type", `{"Action":"allow","SourceType":"external-uri"}`, []string{"SourceType"}},
		{"permissions", `{"Permissions":[{"Action":"allow","HTTP":{"PathPrefix":"/"}}]}`, []string{"Permissions", "Action: missing"}},
		{"trailing", `{"Action":"allow"} {}`, []string{"trailing data"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeIntention([]byte(tc.body), "web", "db")
			if err == nil || !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	// Names matching the query are fine, case aside; namespaces may be
	// the default one.
	if _, err := DecodeIntention([]byte(`{"Action":"allow","SourceName":"WEB","SourceNS":"default","DestinationNS":"default","SourceType":"consul"}`), "web", "db"); err != nil {
		t.Errorf("matching names and default namespace: %v", err)
	}
}

func TestStoreIntentionApply(t *testing.T) {
	s := NewStore()
	apply := func(idx uint64, op IntentionOp, x Intention) error { return s.IntentionApply(idx, op, &x) }
	if err := apply(1, IntentionUpsert, Intention{ID: "u1", SourceName: "web", DestinationName: "db", Action: "allow", CreatedAt: 100, UpdatedAt: 100}); err != nil {
		t.Fatal(err)
	}
	ws := memdb.NewWatchSet()
	idx, got, _ := s.IntentionExact(ws, "WEB", "Db")
	if got == nil || got.ID != "u1" || got.CreateIndex != 1 || idx != 1 {
		t.Fatalf("IntentionExact = %+v at %d", got, idx)
	}
	// Replacing the pair (spelled differently) keeps its ID, creation and
	// first spelling, and fires watches.
	if err := apply(2, IntentionUpsert, Intention{ID: "u2", SourceName: "Web", DestinationName: "DB", Action: "deny", Description: "d", CreatedAt: 200, UpdatedAt: 200}); err != nil {
		t.Fatal(err)
	}
	if ws.Watch(time.After(time.Second)) {
		t.Error("watch did not fire on replace")
	}
	_, got, _ = s.IntentionExact(nil, "web", "db")
	want := &Intention{ID: "u1", SourceName: "web", DestinationName: "db", Action: "deny", Description: "d", CreatedAt: 100, UpdatedAt: 200, CreateIndex: 1, ModifyIndex: 2}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("after replace = %+v, want %+v", got, want)
	}
	if _, byID, _ := s.IntentionByID(nil, "u1"); !reflect.DeepEqual(byID, want) {
		t.Errorf("IntentionByID = %+v", byID)
	}
	for _, tc := range []struct {
		name string
		op   IntentionOp
		x    Intention
	}{
		{"bad action", IntentionUpsert, Intention{ID: "u3", SourceName: "a", DestinationName: "b", Action: "maybe"}},
		{"no source", IntentionUpsert, Intention{ID: "u3", DestinationName: "b", Action: "allow"}},
		{"new without ID", IntentionUpsert, Intention{SourceName: "a", DestinationName: "b", Action: "allow"}},
		{"ID taken", IntentionUpsert, Intention{ID: "u1", SourceName: "a", DestinationName: "b", Action: "allow"}},
		{"unknown op", "frob", Intention{SourceName: "a", DestinationName: "b"}},
	} {
		if err := apply(3, tc.op, tc.x); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", tc.name, err)
		}
	}
	if i, _, _ := s.Intentions(nil); i != 2 {
		t.Errorf("failed writes moved the index to %d", i)
	}
	if err := apply(4, IntentionUpsert, Intention{ID: "u4", SourceName: "*", DestinationName: "db", Action: "allow"}); err != nil {
		t.Fatal(err)
	}
	if err := apply(5, IntentionUpsert, Intention{ID: "u5", SourceName: "web", DestinationName: "*", Action: "deny"}); err != nil {
		t.Fatal(err)
	}
	idx, list, _ := s.Intentions(nil)
	if idx != 5 || len(list) != 3 || list[0].ID != "u1" || list[1].ID != "u4" || list[2].ID != "u5" {
		t.Errorf("Intentions = %d %+v, want u1, u4, u5 at 5", idx, list)
	}
	ids := func(list []*Intention) (out []string) {
		for _, x := range list {
			out = append(out, x.ID)
		}
		return out
	}
	// Wildcards match on either side.
	if _, m, _ := s.IntentionMatch(nil, "destination", "db"); !reflect.DeepEqual(ids(m), []string{"u1", "u4", "u5"}) {
		t.Errorf("IntentionMatch(destination, db) = %v", ids(m))
	}
	if _, m, _ := s.IntentionMatch(nil, "destination", "cache"); !reflect.DeepEqual(ids(m), []string{"u5"}) {
		t.Errorf("IntentionMatch(destination, cache) = %v", ids(m))
	}
	if _, m, _ := s.IntentionMatch(nil, "source", "api"); !reflect.DeepEqual(ids(m), []string{"u4"}) {
		t.Errorf("IntentionMatch(source, api) = %v", ids(m))
	}
	// Delete is idempotent; a delete that removes something moves the index.
	if err := apply(6, IntentionDelete, Intention{SourceName: "WEB", DestinationName: "db"}); err != nil {
		t.Fatal(err)
	}
	if err := apply(7, IntentionDelete, Intention{SourceName: "web", DestinationName: "db"}); err != nil {
		t.Fatal(err)
	}
	idx, got, _ = s.IntentionExact(nil, "web", "db")
	if got != nil || idx != 6 {
		t.Errorf("after delete: %+v at %d, want nil at 6", got, idx)
	}
	if s.LastIndex() != 6 {
		t.Errorf("LastIndex = %d, want 6", s.LastIndex())
	}
	// The mesh view carries them, sorted, with the trust domain.
	if err := s.SetCA(8, &CARoot{TrustDomain: "td.example", Fingerprint: "f"}); err != nil {
		t.Fatal(err)
	}
	st, err := s.MeshState(nil)
	if err != nil || st.TrustDomain != "td.example" || len(st.Intentions) != 2 || st.Intentions[0].ID != "u4" || st.Index != 8 {
		t.Errorf("MeshState = %+v, %v", st, err)
	}
}
