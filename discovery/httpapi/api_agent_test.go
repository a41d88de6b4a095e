package httpapi

import (
	"maps"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/vmesh/vmesh/discovery"
)

// TestAgentMembersTags: every member of /v1/agent/members carries its own
// node ID (the catalog's), not the local agent's; only the local agent has
// a build tag, since the catalog records no other agent's. Read through
// consul/api, as Consul tools read it.
func TestAgentMembersTags(t *testing.T) {
	s := discovery.NewStore()
	for i, n := range []*discovery.Node{
		{ID: "11111111-1111-1111-1111-111111111111", Name: "n1", Address: "10.0.0.1", Datacenter: "dc1"},
		{ID: "22222222-2222-2222-2222-222222222222", Name: "n2", Address: "10.0.0.2", Datacenter: "dc1"},
	} {
		if err := s.EnsureNode(uint64(i+1), n); err != nil {
			t.Fatal(err)
		}
	}
	a := &API{Store: s, Writer: &fakeWriter{s: s, idx: 10}, Cluster: fakeCluster{},
		NodeName: "n1", NodeID: "11111111-1111-1111-1111-111111111111", Datacenter: "dc1", Version: "1.2.3",
		Members: func() []Member {
			return []Member{
				// n3 is a raft member that has not registered its node yet.
				{Name: "n3", Addr: "10.0.0.3", Port: 7400, Role: "node", VMeshRole: "client", Status: 1},
				{Name: "n2", Addr: "10.0.0.2", Port: 7400, Role: "consul", VMeshRole: "voter", Status: 4},
				{Name: "n1", Addr: "10.0.0.1", Port: 7400, Role: "consul", VMeshRole: "leader", Status: 1},
			}
		}}
	mux := http.NewServeMux()
	a.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	client, err := api.NewClient(&api.Config{Address: strings.TrimPrefix(srv.URL, "http://")})
	if err != nil {
		t.Fatal(err)
	}

	ms, err := client.Agent().Members(false)
	if err != nil {
		t.Fatal(err)
	}
	// Consul's tags: role=consul for servers (with raft_vsn and port),
	// role=node for clients, the protocol versions and segment for all.
	server := map[string]string{"role": "consul", "dc": "dc1", "segment": "", "vsn": "2", "vsn_min": "2", "vsn_max": "3", "raft_vsn": "3", "port": "7400"}
	with := func(base map[string]string, kv ...string) map[string]string {
		out := maps.Clone(base)
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	want := map[string]map[string]string{
		"n1": with(server, "vmesh_role", "leader", "id", "11111111-1111-1111-1111-111111111111", "build", "1.2.3"),
		"n2": with(server, "vmesh_role", "voter", "id", "22222222-2222-2222-2222-222222222222"),
		"n3": {"role": "node", "dc": "dc1", "segment": "", "vsn": "2", "vsn_min": "2", "vsn_max": "3", "vmesh_role": "client"},
	}
	var names []string
	for _, m := range ms {
		names = append(names, m.Name)
		if !reflect.DeepEqual(m.Tags, want[m.Name]) {
			t.Errorf("member %s: Tags = %v, want %v", m.Name, m.Tags, want[m.Name])
		}
	}
	if strings.Join(names, ",") != "n1,n2,n3" {
		t.Errorf("members %v, want n1,n2,n3", names)
	}
	if ms[1].Status != 4 || ms[1].Addr != "10.0.0.2" || ms[1].Port != 7400 {
		t.Errorf("n2 = %+v, want status 4 at 10.0.0.2:7400", ms[1])
	}

	self, err := client.Agent().Self()
	if err != nil {
		t.Fatal(err)
	}
	member, _ := self["Member"]["Tags"].(map[string]any)
	if member["id"] != "11111111-1111-1111-1111-111111111111" || member["build"] != "1.2.3" || member["role"] != "consul" {
		t.Errorf("/v1/agent/self Member.Tags = %v, want n1's own", member)
	}
}
