package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
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

// ixnWriter applies intention commands straight to a store, as the FSM
// would.
type ixnWriter struct {
	mu  sync.Mutex
	s   *Store
	idx uint64
}

func (w *ixnWriter) Apply(_ context.Context, cmd Command) (uint64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.idx++
	req, ok := cmd.(IntentionRequest)
	if !ok {
		return 0, fmt.Errorf("ixnWriter: unexpected %T", cmd)
	}
	return w.idx, w.s.IntentionApply(w.idx, req.Op, &req.Intention)
}

func newIntentionAPI(t *testing.T, defaultAllow bool) (*api.Client, string) {
	t.Helper()
	s := NewStore()
	a := &API{Store: s, Writer: &ixnWriter{s: s, idx: 1}, Cluster: fakeCluster{}, NodeName: "n1", Datacenter: "dc1", IntentionsDefaultAllow: defaultAllow}
	mux := http.NewServeMux()
	a.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	client, err := api.NewClient(&api.Config{Address: strings.TrimPrefix(srv.URL, "http://")})
	if err != nil {
		t.Fatal(err)
	}
	return client, srv.URL
}

// TestIntentionsConsulAPI drives /v1/connect/intentions with consul/api,
// as Consul users' tools do.
func TestIntentionsConsulAPI(t *testing.T) {
	client, base := newIntentionAPI(t, false)
	c := client.Connect()
	for _, x := range []*api.Intention{
		{SourceName: "web", DestinationName: "db", Action: api.IntentionActionAllow, Description: "web reads", Meta: map[string]string{"ticket": "42"}},
		{SourceName: "*", DestinationName: "db", Action: api.IntentionActionDeny},
		{SourceName: "web", DestinationName: "*", Action: api.IntentionActionAllow},
	} {
		if _, err := c.IntentionUpsert(x, nil); err != nil {
			t.Fatalf("IntentionUpsert(%s): %v", x, err)
		}
	}
	got, meta, err := c.IntentionGetExact("web", "db", nil)
	if err != nil || got == nil {
		t.Fatalf("IntentionGetExact = %v, %v", got, err)
	}
	if got.ID == "" || got.Action != api.IntentionActionAllow || got.Description != "web reads" || got.Meta["ticket"] != "42" ||
		got.Precedence != 9 || got.SourceNS != "default" || got.SourceType != api.IntentionSourceConsul ||
		got.CreatedAt.IsZero() || got.CreateIndex == 0 || meta.LastIndex < got.ModifyIndex {
		t.Errorf("IntentionGetExact = %+v (index %d)", got, meta.LastIndex)
	}
	if missing, _, err := c.IntentionGetExact("api", "db", nil); err != nil || missing != nil {
		t.Errorf("IntentionGetExact of an unknown pair = %v, %v; want nil (404)", missing, err)
	}
	//lint:ignore SA1019 the deprecated by-ID read is served too.
	byID, _, err := c.IntentionGet(got.ID, nil)
	if err != nil || byID == nil || byID.SourceName != "web" || byID.DestinationName != "db" {
		t.Errorf("IntentionGet(%s) = %+v, %v", got.ID, byID, err)
	}

	// Replacing keeps the ID and changes the action.
	if _, err := c.IntentionUpsert(&api.Intention{SourceName: "web", DestinationName: "db", Action: api.IntentionActionDeny}, nil); err != nil {
		t.Fatal(err)
	}
	again, _, _ := c.IntentionGetExact("web", "db", nil)
	if again.ID != got.ID || again.Action != api.IntentionActionDeny || again.CreateIndex != got.CreateIndex || again.ModifyIndex <= got.ModifyIndex {
		t.Errorf("after replace: %+v, was %+v", again, got)
	}

	list, meta, err := c.Intentions(nil)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, x := range list {
		order = append(order, fmt.Sprintf("%s>%s:%d", x.SourceName, x.DestinationName, x.Precedence))
	}
	if want := []string{"web>db:9", "*>db:8", "web>*:6"}; !reflect.DeepEqual(order, want) {
		t.Errorf("Intentions = %v, want %v", order, want)
	}

	// Check: precedence, then the default (deny here).
	for _, tc := range []struct {
		src, dst string
		want     bool
	}{
		{"web", "db", false},   // web>db deny (9)
		{"api", "db", false},   // *>db deny (8)
		{"web", "cache", true}, // web>* allow (6)
		{"api", "cache", false},
	} {
		allowed, _, err := c.IntentionCheck(&api.IntentionCheck{Source: tc.src, Destination: tc.dst}, nil)
		if err != nil || allowed != tc.want {
			t.Errorf("IntentionCheck(%s -> %s) = %v, %v; want %v", tc.src, tc.dst, allowed, err, tc.want)
		}
	}

	match, _, err := c.IntentionMatch(&api.IntentionMatch{By: api.IntentionMatchDestination, Names: []string{"db", "cache"}}, nil)
	if err != nil || len(match["db"]) != 3 || len(match["cache"]) != 1 || match["cache"][0].DestinationName != "*" {
		t.Errorf("IntentionMatch = %v, %v", match, err)
	}

	// A blocking list wakes on a change.
	done := make(chan int, 1)
	go func() {
		l, _, err := c.Intentions(&api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 5 * time.Second})
		if err != nil {
			done <- -1
			return
		}
		done <- len(l)
	}()
	time.Sleep(50 * time.Millisecond)
	if _, err := c.IntentionDeleteExact("*", "db", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-done:
		if n != 2 {
			t.Errorf("blocking Intentions returned %d intentions, want 2", n)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("blocking Intentions did not wake up")
	}
	if allowed, _, _ := c.IntentionCheck(&api.IntentionCheck{Source: "api", Destination: "db"}, nil); allowed {
		t.Error("api -> db allowed after deleting *>db, want the default deny")
	}
	// Deleting what is gone is fine, as in Consul; by ID it is a 404.
	if _, err := c.IntentionDeleteExact("*", "db", nil); err != nil {
		t.Errorf("second IntentionDeleteExact: %v", err)
	}
	//lint:ignore SA1019 the deprecated by-ID delete is served too.
	if _, err := c.IntentionDelete(got.ID, nil); err != nil {
		t.Errorf("IntentionDelete(%s): %v", got.ID, err)
	}
	//lint:ignore SA1019 the deprecated by-ID delete is served too.
	if _, err := c.IntentionDelete(got.ID, nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("IntentionDelete of a deleted ID: %v, want a 404", err)
	}

	// Bad input is a 400 naming the field.
	for _, tc := range []struct{ method, path, body, want string }{
		{"PUT", "/v1/connect/intentions/exact?source=web&destination=db", `{"Action":"maybe"}`, "Action"},
		{"PUT", "/v1/connect/intentions/exact?source=web&destination=db", `{"Action":"allow","Permissions":[{}]}`, "Permissions"},
		{"PUT", "/v1/connect/intentions/exact?source=web&destination=db", `{"Action":"allow","Bogus":1}`, `"Bogus"`},
		{"PUT", "/v1/connect/intentions/exact?destination=db", `{"Action":"allow"}`, "'source'"},
		{"PUT", "/v1/connect/intentions/exact?source=web&destination=d*", `{"Action":"allow"}`, "destination"},
		{"GET", "/v1/connect/intentions/exact?source=web", ``, "'destination'"},
		{"DELETE", "/v1/connect/intentions/exact?source=ns1/web&destination=db", ``, "namespace"},
		{"GET", "/v1/connect/intentions/check?source=*&destination=db", ``, "wildcard"},
		{"GET", "/v1/connect/intentions/check?source=web&destination=db&source-type=external-uri", ``, "source-type"},
		{"GET", "/v1/connect/intentions/match?by=sideways&name=db", ``, "by"},
		{"GET", "/v1/connect/intentions/match?by=source", ``, "'name'"},
		{"POST", "/v1/connect/intentions", `{"SourceName":"web","DestinationName":"db","Action":"allow"}`, "use the exact endpoints"},
		{"PUT", "/v1/connect/intentions/" + got.ID, `{"Action":"allow"}`, "use the exact endpoints"},
	} {
		req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(b), tc.want) {
			t.Errorf("%s %s %s: %d %q; want 400 mentioning %q", tc.method, tc.path, tc.body, resp.StatusCode, b, tc.want)
		}
	}
	//lint:ignore SA1019 the deprecated by-ID create is refused with a pointer to IntentionUpsert.
	if _, _, err := c.IntentionCreate(&api.Intention{SourceName: "a", DestinationName: "b", Action: "allow"}, nil); err == nil || !strings.Contains(err.Error(), "IntentionUpsert") {
		t.Errorf("IntentionCreate (legacy) = %v, want a 400 pointing at IntentionUpsert", err)
	}
}

// TestIntentionCheckDefaultAllow: with intentions_default = "allow", only
// a deny intention denies.
func TestIntentionCheckDefaultAllow(t *testing.T) {
	client, _ := newIntentionAPI(t, true)
	c := client.Connect()
	check := func(src, dst string) bool {
		t.Helper()
		ok, _, err := c.IntentionCheck(&api.IntentionCheck{Source: src, Destination: dst}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !check("web", "db") {
		t.Error("no intentions, default allow: web -> db denied")
	}
	if _, err := c.IntentionUpsert(&api.Intention{SourceName: "*", DestinationName: "db", Action: api.IntentionActionDeny}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.IntentionUpsert(&api.Intention{SourceName: "web", DestinationName: "db", Action: api.IntentionActionAllow}, nil); err != nil {
		t.Fatal(err)
	}
	if !check("web", "db") || check("api", "db") || !check("api", "cache") {
		t.Errorf("default allow with *>db deny, web>db allow: web->db %v, api->db %v, api->cache %v; want true, false, true",
			check("web", "db"), check("api", "db"), check("api", "cache"))
	}
}
