package acl

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// jsonFields maps each JSON key of a struct type to its field's type.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[name] = f.Type
	}
	return m
}

// TestFieldsMatchConsulAPI: every field we serve exists in consul/api with
// the same JSON name and a type that encodes the same way.
func TestFieldsMatchConsulAPI(t *testing.T) {
	pairs := []struct{ ours, theirs reflect.Type }{
		{reflect.TypeFor[Token](), reflect.TypeFor[api.ACLToken]()},
		{reflect.TypeFor[Policy](), reflect.TypeFor[api.ACLPolicy]()},
		{reflect.TypeFor[Role](), reflect.TypeFor[api.ACLRole]()},
		{reflect.TypeFor[Link](), reflect.TypeFor[api.ACLLink]()},
		{reflect.TypeFor[ServiceIdentity](), reflect.TypeFor[api.ACLServiceIdentity]()},
		{reflect.TypeFor[NodeIdentity](), reflect.TypeFor[api.ACLNodeIdentity]()},
	}
	known := map[reflect.Type]reflect.Type{}
	for _, p := range pairs {
		known[p.ours] = p.theirs
	}
	// same: ours are values where consul/api has pointers, which encode
	// the same in JSON; our own types stand for their consul/api twins.
	var same func(o, th reflect.Type) bool
	same = func(o, th reflect.Type) bool {
		for o.Kind() == reflect.Pointer {
			o = o.Elem()
		}
		for th.Kind() == reflect.Pointer {
			th = th.Elem()
		}
		if o.Kind() == reflect.Slice && th.Kind() == reflect.Slice {
			return same(o.Elem(), th.Elem())
		}
		return o == th || known[o] == th
	}
	for _, p := range pairs {
		theirs := jsonFields(p.theirs)
		for name, ourType := range jsonFields(p.ours) {
			theirType, ok := theirs[name]
			if !ok {
				t.Errorf("%s.%s: consul/api's %s has no such field", p.ours.Name(), name, p.theirs.Name())
				continue
			}
			if !same(ourType, theirType) {
				t.Errorf("%s.%s: type %s, consul/api has %s", p.ours.Name(), name, ourType, theirType)
			}
		}
	}
}

// TestTokenRoundTripsThroughConsulAPI: what consul/api sends decodes into
// our Token, and what we serve decodes into consul/api's unchanged.
func TestTokenRoundTripsThroughConsulAPI(t *testing.T) {
	exp := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	in := api.ACLToken{
		CreateIndex: 3, ModifyIndex: 4,
		AccessorID: "6a1253d2-1785-24fd-91c2-f8e78c745511", SecretID: "45a3bd52-07c7-47a4-52fd-0745e0cfe967",
		Description:       "web agent",
		Policies:          []*api.ACLTokenPolicyLink{{ID: "p1", Name: "one"}},
		Roles:             []*api.ACLTokenRoleLink{{ID: "r1", Name: "ops"}},
		ServiceIdentities: []*api.ACLServiceIdentity{{ServiceName: "web", Datacenters: []string{"dc1"}}},
		NodeIdentities:    []*api.ACLNodeIdentity{{NodeName: "n1", Datacenter: "dc1"}},
		Local:             true,
		ExpirationTTL:     time.Hour,
		ExpirationTime:    &exp,
		CreateTime:        exp.Add(-time.Hour),
		Hash:              []byte{1, 2, 3},
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var ours Token
	if err := json.Unmarshal(b, &ours); err != nil {
		t.Fatal(err)
	}
	if ours.ExpirationTTL != time.Hour || ours.Policies[0].Name != "one" || ours.NodeIdentities[0].Datacenter != "dc1" {
		t.Errorf("decoded %+v", ours)
	}
	b, err = json.Marshal(ours)
	if err != nil {
		t.Fatal(err)
	}
	var back api.ACLToken
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, in) {
		t.Errorf("round trip changed the token:\n got %+v\nwant %+v", back, in)
	}

	for _, p := range []any{
		api.ACLPolicy{ID: "p", Name: "n", Description: "d", Rules: `acl = "read"`, Datacenters: []string{"dc1"}, Hash: []byte{1}, CreateIndex: 1, ModifyIndex: 2},
		api.ACLRole{ID: "r", Name: "n", Description: "d", Policies: []*api.ACLLink{{ID: "p"}}, ServiceIdentities: []*api.ACLServiceIdentity{{ServiceName: "s"}}, NodeIdentities: []*api.ACLNodeIdentity{{NodeName: "n", Datacenter: "dc1"}}, Hash: []byte{1}, CreateIndex: 1, ModifyIndex: 2},
	} {
		roundTrip(t, p)
	}
}

func roundTrip(t *testing.T, theirs any) {
	t.Helper()
	b, _ := json.Marshal(theirs)
	var ours any
	switch theirs.(type) {
	case api.ACLPolicy:
		ours = &Policy{}
	case api.ACLRole:
		ours = &Role{}
	}
	if err := json.Unmarshal(b, ours); err != nil {
		t.Fatal(err)
	}
	b2, _ := json.Marshal(ours)
	back := reflect.New(reflect.TypeOf(theirs))
	if err := json.Unmarshal(b2, back.Interface()); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Elem().Interface(), theirs) {
		t.Errorf("round trip changed %T:\n got %+v\nwant %+v", theirs, back.Elem().Interface(), theirs)
	}
}

func TestTokenExpirationTTLForms(t *testing.T) {
	tests := []struct {
		body    string
		want    time.Duration
		wantErr string
	}{
		{`{"ExpirationTTL": "90m"}`, 90 * time.Minute, ""},
		{`{"ExpirationTTL": 3600000000000}`, time.Hour, ""},
		{`{"ExpirationTTL": null}`, 0, ""},
		{`{}`, 0, ""},
		{`{"ExpirationTTL": "soon"}`, 0, "ExpirationTTL"},
		{`{"ExpirationTTL": 1.5}`, 0, "ExpirationTTL"},
	}
	for _, tt := range tests {
		var tok Token
		tok.ExpirationTTL = time.Minute // a reused value must not keep it
		err := json.Unmarshal([]byte(tt.body), &tok)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: got %v, want an error about %s", tt.body, err, tt.wantErr)
			}
			continue
		}
		if err != nil || tok.ExpirationTTL != tt.want {
			t.Errorf("%s: got %v, %v; want %v", tt.body, tok.ExpirationTTL, err, tt.want)
		}
	}
}

func TestTokenExpired(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tok := Token{ExpirationTime: &at}
	if tok.Expired(at) || !tok.Expired(at.Add(time.Nanosecond)) || (&Token{}).Expired(at) {
		t.Error("Expired: want false at the instant, true after it, false without an expiry")
	}
}

func TestValidate(t *testing.T) {
	id := "6a1253d2-1785-24fd-91c2-f8e78c745511"
	at := time.Now()
	tests := []struct {
		name string
		v    interface{ Validate() error }
		want []string // nil: valid
	}{
		{"good token", &Token{AccessorID: id, SecretID: id, Policies: []Link{{Name: "x"}}, ServiceIdentities: []ServiceIdentity{{ServiceName: "web-1"}}, NodeIdentities: []NodeIdentity{{NodeName: "n1", Datacenter: "dc1"}}}, nil},
		{"anonymous token", &Token{AccessorID: AnonymousAccessorID, SecretID: AnonymousSecretID}, nil},
		{"bad IDs", &Token{AccessorID: "x", SecretID: "not-a-uuid-secret"}, []string{`AccessorID "x" is not a UUID`, "SecretID is not a UUID"}},
		{"secret never echoed", &Token{SecretID: "hunter2"}, []string{"SecretID is not a UUID"}},
		{"anonymous secret reserved", &Token{AccessorID: id, SecretID: AnonymousSecretID}, []string{"reserved for the anonymous token"}},
		{"empty link", &Token{Roles: []Link{{}}}, []string{"Roles[0]: give an ID or a Name"}},
		{"bad identities", &Token{ServiceIdentities: []ServiceIdentity{{ServiceName: "Web"}}, NodeIdentities: []NodeIdentity{{NodeName: "-n"}}}, []string{`ServiceIdentities[0]: ServiceName "Web"`, `NodeIdentities[0]: NodeName "-n"`, "NodeIdentities[0]: Datacenter is required"}},
		{"local token identity datacenters", &Token{Local: true, ServiceIdentities: []ServiceIdentity{{ServiceName: "web", Datacenters: []string{"dc1"}}}}, []string{"local token"}},
		{"TTL and time", &Token{ExpirationTTL: time.Hour, ExpirationTime: &at}, []string{"cannot both be set"}},
		{"negative TTL", &Token{ExpirationTTL: -time.Second}, []string{"negative"}},
		{"good policy", &Policy{ID: id, Name: "web-write", Rules: `service "web" { policy = "write" }`}, nil},
		{"bad policy", &Policy{ID: "p", Name: "has space", Rules: `service "web" { policy = "all" }`}, []string{`ID "p"`, `Name "has space"`, `Rules: line 1: service "web": policy: "all"`}},
		{"long policy name", &Policy{Name: strings.Repeat("a", 129)}, []string{"Name"}},
		{"good role", &Role{Name: "ops", Policies: []Link{{ID: id}}}, nil},
		{"bad role", &Role{Name: "", NodeIdentities: []NodeIdentity{{NodeName: "n"}}}, []string{`Name ""`, "Datacenter is required"}},
		{"longest role name", &Role{Name: strings.Repeat("r", 256)}, nil},
		{"long role name", &Role{Name: strings.Repeat("r", 257)}, []string{"Name", "1 to 256"}},
		{"role name characters", &Role{Name: "ops/team"}, []string{`Name "ops/team"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.v.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q echoes the secret", err)
			}
		})
	}
}

func TestNewIDAndHashSecret(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id, err := NewID()
		if err != nil {
			t.Fatal(err)
		}
		if !uuidRE.MatchString(id) || id[14] != '4' || !strings.ContainsRune("89ab", rune(id[19])) {
			t.Fatalf("NewID() = %q, not a version 4 UUID", id)
		}
		if seen[id] {
			t.Fatalf("NewID() repeated %q", id)
		}
		seen[id] = true
	}
	// sha256("anonymous")
	if got, want := HashSecret("anonymous"), "2f183a4e64493af3f377f745eda502363cd3e7ef6e4d266d444758de0a85fcc8"; got != want {
		t.Errorf("HashSecret = %s, want %s", got, want)
	}
}

func TestBuiltinObjects(t *testing.T) {
	if p := ManagementPolicy(); p.ID != "00000000-0000-0000-0000-000000000001" || p.Name != "global-management" {
		t.Errorf("management policy %+v", p)
	}
	if tok := AnonymousToken(); tok.AccessorID != "00000000-0000-0000-0000-000000000002" || tok.SecretID != "anonymous" {
		t.Errorf("anonymous token %+v", tok)
	}
}
