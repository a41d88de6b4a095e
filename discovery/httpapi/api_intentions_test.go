package httpapi

import (
	"context"
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
	"github.com/vmesh/vmesh/discovery"
)

// ixnWriter applies intention commands straight to a store, as the FSM
// would.
type ixnWriter struct {
	mu  sync.Mutex
	s   *discovery.Store
	idx uint64
}

func (w *ixnWriter) Apply(_ context.Context, cmd discovery.Command) (uint64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.idx++
	req, ok := cmd.(discovery.IntentionRequest)
	if !ok {
		return 0, fmt.Errorf("ixnWriter: unexpected %T", cmd)
	}
	return w.idx, w.s.IntentionApplyRequest(w.idx, &req)
}

func newIntentionAPI(t *testing.T, defaultAllow bool) (*api.Client, string) {
	t.Helper()
	s := discovery.NewStore()
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
		{"POST", "/v1/connect/intentions", `{"ID":"x","SourceName":"web","DestinationName":"db","Action":"allow"}`, "ID: must be empty"},
		{"POST", "/v1/connect/intentions", `{"DestinationName":"db","Action":"allow"}`, "SourceName: missing"},
		{"PUT", "/v1/connect/intentions/" + got.ID, `{"ID":"other","SourceName":"web","DestinationName":"db","Action":"allow"}`, "does not match the ID in the path"},
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
