package httpapi

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
)

// TestIntentionsLegacyByID drives the legacy ID API as `consul intention
// create`, `create -replace`, `get ID` and `delete ID` do.
func TestIntentionsLegacyByID(t *testing.T) {
	client, _ := newIntentionAPI(t, false)
	c := client.Connect()
	//lint:ignore SA1019 the deprecated create is what the consul CLI sends.
	id, _, err := c.IntentionCreate(&api.Intention{SourceName: "web", DestinationName: "db", SourceType: api.IntentionSourceConsul,
		Action: api.IntentionActionAllow, Description: "d1", Meta: map[string]string{"k": "v"}}, nil)
	if err != nil || len(id) != 36 {
		t.Fatalf("IntentionCreate = %q, %v; want a UUID", id, err)
	}
	exact, _, err := c.IntentionGetExact("web", "db", nil)
	if err != nil || exact == nil || exact.ID != id || exact.Description != "d1" || exact.Meta["k"] != "v" {
		t.Fatalf("IntentionGetExact after create = %+v, %v; want ID %s", exact, err, id)
	}
	// A second create of the pair is refused, as Consul refuses a duplicate.
	//lint:ignore SA1019 as above.
	if _, _, err := c.IntentionCreate(&api.Intention{SourceName: "web", DestinationName: "db", Action: api.IntentionActionDeny}, nil); err == nil || !strings.Contains(err.Error(), "duplicate intention") {
		t.Errorf("duplicate IntentionCreate = %v, want a duplicate error", err)
	}
	// Update by ID (create -replace): same ID, new action, same creation.
	//lint:ignore SA1019 as above.
	if _, err := c.IntentionUpdate(&api.Intention{ID: id, SourceName: "web", DestinationName: "db", Action: api.IntentionActionDeny}, nil); err != nil {
		t.Fatalf("IntentionUpdate: %v", err)
	}
	//lint:ignore SA1019 as above.
	got, _, err := c.IntentionGet(id, nil)
	if err != nil || got == nil || got.Action != api.IntentionActionDeny || got.CreateIndex != exact.CreateIndex || !got.CreatedAt.Equal(exact.CreatedAt) {
		t.Errorf("IntentionGet after update = %+v, %v", got, err)
	}
	// An update may move the intention to a free pair; the ID stays.
	//lint:ignore SA1019 as above.
	if _, err := c.IntentionUpdate(&api.Intention{ID: id, SourceName: "api", DestinationName: "db", Action: api.IntentionActionAllow}, nil); err != nil {
		t.Fatalf("IntentionUpdate moving the pair: %v", err)
	}
	if old, _, _ := c.IntentionGetExact("web", "db", nil); old != nil {
		t.Errorf("web => db still exists after the move: %+v", old)
	}
	if moved, _, _ := c.IntentionGetExact("api", "db", nil); moved == nil || moved.ID != id {
		t.Errorf("api => db after the move = %+v, want ID %s", moved, id)
	}
	// Updating an unknown ID is a 404; onto a taken pair a 400.
	//lint:ignore SA1019 as above.
	if _, err := c.IntentionUpdate(&api.Intention{ID: "00000000-0000-4000-8000-000000000000", SourceName: "x", DestinationName: "y", Action: "allow"}, nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("IntentionUpdate of an unknown ID = %v, want a 404", err)
	}
	if _, err := c.IntentionUpsert(&api.Intention{SourceName: "web", DestinationName: "db", Action: "allow"}, nil); err != nil {
		t.Fatal(err)
	}
	//lint:ignore SA1019 as above.
	if _, err := c.IntentionUpdate(&api.Intention{ID: id, SourceName: "web", DestinationName: "db", Action: "allow"}, nil); err == nil || !strings.Contains(err.Error(), "duplicate intention") {
		t.Errorf("IntentionUpdate onto a taken pair = %v, want a duplicate error", err)
	}
}

// TestServiceIntentionsConfigEntry: a service-intentions entry is the
// set of intentions to its destination, both ways, with stable IDs.
func TestServiceIntentionsConfigEntry(t *testing.T) {
	client, base := newIntentionAPI(t, false)
	c, ce := client.Connect(), client.ConfigEntries()
	if _, err := c.IntentionUpsert(&api.Intention{SourceName: "web", DestinationName: "db", Action: "allow", Description: "first"}, nil); err != nil {
		t.Fatal(err)
	}
	web, _, _ := c.IntentionGetExact("web", "db", nil)

	entry, _, err := ce.Get(api.ServiceIntentions, "db", nil)
	if err != nil {
		t.Fatalf("Get service-intentions/db: %v", err)
	}
	si := entry.(*api.ServiceIntentionsConfigEntry)
	if si.Name != "db" || len(si.Sources) != 1 || si.Sources[0].Name != "web" || si.Sources[0].Action != "allow" ||
		si.Sources[0].LegacyID != web.ID || si.Sources[0].Description != "first" || si.ModifyIndex != web.ModifyIndex {
		t.Errorf("entry = %+v (source %+v), want web allow with ID %s", si, si.Sources[0], web.ID)
	}

	// Writing the entry: web stays (same ID), api is new, * is new.
	ok, _, err := ce.Set(&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "db", Sources: []*api.SourceIntention{
		{Name: "web", Action: api.IntentionActionDeny, Type: api.IntentionSourceConsul},
		{Name: "api", Action: api.IntentionActionAllow, Description: "new"},
		{Name: "*", Action: api.IntentionActionDeny},
	}}, nil)
	if err != nil || !ok {
		t.Fatalf("Set service-intentions = %v, %v", ok, err)
	}
	after, _, _ := c.IntentionGetExact("web", "db", nil)
	if after == nil || after.ID != web.ID || after.Action != "deny" {
		t.Errorf("web => db after the entry write = %+v; want ID %s, deny", after, web.ID)
	}
	if allowed, _, _ := c.IntentionCheck(&api.IntentionCheck{Source: "api", Destination: "db"}, nil); !allowed {
		t.Error("api -> db denied; the entry allows it")
	}
	list, _, err := ce.List(api.ServiceIntentions, nil)
	if err != nil || len(list) != 1 || len(list[0].(*api.ServiceIntentionsConfigEntry).Sources) != 3 {
		t.Fatalf("List service-intentions = %v, %v", list, err)
	}
	names := []string{}
	for _, s := range list[0].(*api.ServiceIntentionsConfigEntry).Sources {
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "api,web,*" {
		t.Errorf("sources in order %v, want api,web,* (precedence, then name)", names)
	}

	// A check-and-set with a stale index fails and changes nothing.
	stale := &api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "db", ModifyIndex: si.ModifyIndex,
		Sources: []*api.SourceIntention{{Name: "web", Action: "allow"}}}
	if ok, _, err := ce.CAS(stale, si.ModifyIndex, nil); err != nil || ok {
		t.Errorf("CAS with a stale index = %v, %v; want false", ok, err)
	}

	// Dropping a source deletes its intention; deleting the entry, all.
	if _, _, err := ce.Set(&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "db", Sources: []*api.SourceIntention{{Name: "web", Action: "deny"}}}, nil); err != nil {
		t.Fatal(err)
	}
	if gone, _, _ := c.IntentionGetExact("api", "db", nil); gone != nil {
		t.Errorf("api => db survives its removal from the entry: %+v", gone)
	}
	if _, err := ce.Delete(api.ServiceIntentions, "db", nil); err != nil {
		t.Fatal(err)
	}
	if all, _, _ := c.Intentions(nil); len(all) != 0 {
		t.Errorf("intentions after deleting the entry: %v", all)
	}
	if _, _, err := ce.Get(api.ServiceIntentions, "db", nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("Get of a deleted entry = %v, want a 404", err)
	}

	// Bad entries are refused naming the field.
	for _, tc := range []struct{ body, want string }{
		{`{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Action":"maybe"}]}`, "Sources[0].Action"},
		{`{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Action":"allow"},{"Name":"WEB","Action":"deny"}]}`, "listed twice"},
		{`{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Peer":"p","Action":"allow"}]}`, "Sources[0].Peer"},
		{`{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Permissions":[{"Action":"allow"}]}]}`, "Sources[0].Permissions"},
		{`{"Kind":"service-intentions","Name":"","Sources":[]}`, "Name: missing"},
		{`{"Kind":"service-intentions","Name":"db","Bogus":1}`, `"Bogus"`},
	} {
		code, body := doRequest(t, "PUT", base+"/v1/config", tc.body)
		if code != 400 || !strings.Contains(body, tc.want) {
			t.Errorf("PUT %s: %d %q; want 400 mentioning %q", tc.body, code, body, tc.want)
		}
	}
}

func doRequest(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestIntentionsLegacyAndEntryACLs: the legacy ID API and
// service-intentions entries ask Consul's rules: intention:write on the
// destination (both, for an update that moves it) to write,
// intention:read on it to read, lists filtered.
func TestIntentionsLegacyAndEntryACLs(t *testing.T) {
	f := newOpsFixture(t)
	mgmt := f.client(t, f.mgmt)
	//lint:ignore SA1019 the legacy API under test.
	otherID, _, err := mgmt.Connect().IntentionCreate(&api.Intention{SourceName: "web", DestinationName: "other", Action: "allow"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	dbWriter := f.client(t, f.token(t, `service "db" { policy = "read" intentions = "write" }`))
	dbReader := f.client(t, f.token(t, `service "db" { policy = "read" intentions = "read" }`))

	//lint:ignore SA1019 as above.
	id, _, err := dbWriter.Connect().IntentionCreate(&api.Intention{SourceName: "web", DestinationName: "db", Action: "allow"}, nil)
	if err != nil {
		t.Fatalf("create onto db with intentions write on db: %v", err)
	}
	//lint:ignore SA1019 as above.
	if _, _, err := dbWriter.Connect().IntentionCreate(&api.Intention{SourceName: "web", DestinationName: "cache", Action: "allow"}, nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("create onto cache = %v, want 403", err)
	}
	//lint:ignore SA1019 as above.
	if _, err := dbWriter.Connect().IntentionUpdate(&api.Intention{ID: id, SourceName: "web", DestinationName: "cache", Action: "allow"}, nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("moving db's intention to cache = %v, want 403", err)
	}
	//lint:ignore SA1019 as above.
	if _, err := dbWriter.Connect().IntentionUpdate(&api.Intention{ID: otherID, SourceName: "web", DestinationName: "db", Action: "allow"}, nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("moving other's intention onto db = %v, want 403 (no write on other)", err)
	}
	if _, _, err := dbWriter.ConfigEntries().Set(&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "db",
		Sources: []*api.SourceIntention{{Name: "web", Action: "deny"}}}, nil); err != nil {
		t.Errorf("writing service-intentions/db: %v", err)
	}
	if _, _, err := dbWriter.ConfigEntries().Set(&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "other",
		Sources: []*api.SourceIntention{{Name: "web", Action: "deny"}}}, nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("writing service-intentions/other = %v, want 403", err)
	}
	if _, err := dbWriter.ConfigEntries().Delete(api.ServiceIntentions, "other", nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("deleting service-intentions/other = %v, want 403", err)
	}

	if _, _, err := dbReader.ConfigEntries().Get(api.ServiceIntentions, "db", nil); err != nil {
		t.Errorf("reading service-intentions/db: %v", err)
	}
	if _, _, err := dbReader.ConfigEntries().Get(api.ServiceIntentions, "other", nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("reading service-intentions/other = %v, want 403", err)
	}
	list, meta, err := dbReader.ConfigEntries().List(api.ServiceIntentions, nil)
	if err != nil || len(list) != 1 || list[0].GetName() != "db" || !meta.ResultsFilteredByACLs {
		t.Errorf("listing service-intentions = %v (filtered %v), %v; want db only, filtered", list, meta != nil && meta.ResultsFilteredByACLs, err)
	}
	//lint:ignore SA1019 as above.
	if _, _, err := dbReader.Connect().IntentionGet(otherID, nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("reading other's intention by ID = %v, want 403", err)
	}
	if _, _, err := dbReader.ConfigEntries().Set(&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "db"}, nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("writing service-intentions/db with read = %v, want 403", err)
	}
}
