package httpapi

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/discovery"
)

// A create body becomes a session with Consul's defaults and its way of
// folding the pre-1.7 Checks list into the node checks.
func TestParseSessionCreate(t *testing.T) {
	tests := []struct {
		body          string
		nodeChecks    []string
		serviceChecks []string
		lockDelay     time.Duration
		err           string
	}{
		{body: ``, nodeChecks: []string{"serfHealth"}, lockDelay: 15 * time.Second},
		{body: `{}`, nodeChecks: []string{"serfHealth"}, lockDelay: 15 * time.Second},
		{body: `{"NodeChecks":[]}`, lockDelay: 15 * time.Second},
		{body: `{"Checks":[]}`, lockDelay: 15 * time.Second},
		{body: `{"Checks":["serfHealth"]}`, nodeChecks: []string{"serfHealth"}, lockDelay: 15 * time.Second},
		{body: `{"Checks":["disk"]}`, nodeChecks: []string{"serfHealth", "disk"}, lockDelay: 15 * time.Second},
		{body: `{"NodeChecks":["disk"],"Checks":["mem"]}`, nodeChecks: []string{"disk", "mem"}, lockDelay: 15 * time.Second},
		{body: `{"ServiceChecks":[{"ID":"web-ttl","Namespace":"default"}],"LockDelay":"1500ms"}`,
			nodeChecks: []string{"serfHealth"}, serviceChecks: []string{"web-ttl"}, lockDelay: 1500 * time.Millisecond},
		{body: `{"LockDelay":0}`, nodeChecks: []string{"serfHealth"}},
		{body: `{"LockDelay":1.5}`, nodeChecks: []string{"serfHealth"}, lockDelay: 1500 * time.Millisecond},
		{body: `{"ServiceChecks":[{}]}`, err: "ServiceChecks[0].ID: missing"},
		{body: `{"LockDelay":true}`, err: "LockDelay"},
		{body: `{"TTL":"25h"}`, err: "TTL: 25h0m0s is not between"},
		{body: `{"Partition":"p1"}`, err: `Partition: "p1" is not supported`},
		{body: `{} {}`, err: "trailing data"},
	}
	for _, tt := range tests {
		s, err := parseSessionCreate([]byte(tt.body), "n1")
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: %v; want an error with %q", tt.body, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.body, err)
			continue
		}
		if !slices.Equal(s.NodeChecks, tt.nodeChecks) || !slices.Equal(s.ServiceChecks, tt.serviceChecks) || s.LockDelay != tt.lockDelay ||
			s.Node != "n1" || s.Behavior != discovery.SessionRelease || len(s.ID) != 36 {
			t.Errorf("%s: %+v; want node checks %v, service checks %v, lock-delay %s on n1, release, a UUID",
				tt.body, s, tt.nodeChecks, tt.serviceChecks, tt.lockDelay)
		}
	}
}
