package raft

import (
	"reflect"
	"testing"

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
)

// TestFSMGatewayEntriesRoundTrip: gateway config entries, with their
// optional numbers, durations and nested TLS blocks, come through the raft
// log and a snapshot exactly as written.
func TestFSMGatewayEntriesRoundTrip(t *testing.T) {
	src := discovery.NewStore()
	f := &fsm{store: src, logger: testkit.Logger(t)}
	for i, body := range []string{
		`{"Kind":"ingress-gateway","Name":"ingress","Meta":{"team":"edge"},
		  "TLS":{"Enabled":true,"SDS":{"ClusterName":"sds","CertResource":"gw"},"TLSMinVersion":"TLSv1_2"},
		  "Defaults":{"MaxConnections":10,"PassiveHealthCheck":{"Interval":"5s","MaxEjectionPercent":50,"BaseEjectionTime":"30s"}},
		  "Listeners":[{"Port":8080,"Protocol":"http","Services":[{"Name":"web","Hosts":["web.example.com"],
		    "TLS":{"SDS":{"CertResource":"web"}},"RequestHeaders":{"Set":{"x-a":"b"}},"MaxPendingRequests":7}]}]}`,
		`{"Kind":"terminating-gateway","Name":"egress","Services":[{"Name":"billing","CAFile":"ca.pem","CertFile":"c.pem","KeyFile":"k.pem","SNI":"b"},{"Name":"*"}]}`,
	} {
		e, err := discovery.DecodeConfigEntry([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		if resp := f.Apply(commandLog(t, uint64(1+i), discovery.ConfigEntryRequest{Op: discovery.ConfigEntryUpsert, Entry: *e})); resp != nil {
			t.Fatalf("applying %s: %v", e.Name, resp)
		}
		_, got, _ := src.ConfigEntry(nil, e.Kind, e.Name)
		e.CreateIndex, e.ModifyIndex = uint64(1+i), uint64(1+i)
		if !reflect.DeepEqual(got, e) {
			t.Errorf("%s through the log: %+v; want %+v", e.Name, got, e)
		}
	}
	restoreRoundTrip(t, src, discovery.RecordConfig, 2)
}
