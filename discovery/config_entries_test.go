package discovery

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDecodeConfigEntry(t *testing.T) {
	cases := []struct {
		name string
		body string
		want *ConfigEntry
		errs []string
	}{
		{
			name: "service-defaults",
			body: `{"Kind":"service-defaults","Name":"web","Protocol":"http","LocalConnectTimeoutMs":250,"Meta":{"team":"a"}}`,
			want: &ConfigEntry{Kind: KindServiceDefaults, Name: "web", Meta: map[string]string{"team": "a"},
				Defaults: &ServiceDefaults{Protocol: "http", LocalConnectTimeoutMs: 250}},
		},
		{
			name: "lower-case keys, as consul config write accepts",
			body: `{"kind":"service-defaults","name":"web","protocol":"grpc"}`,
			want: &ConfigEntry{Kind: KindServiceDefaults, Name: "web", Defaults: &ServiceDefaults{Protocol: "grpc"}},
		},
		{
			name: "service-router",
			body: `{"Kind":"service-router","Name":"web","Routes":[
				{"Match":{"HTTP":{"PathPrefix":"/admin","Header":[{"Name":"x-debug","Exact":"1"}],"Methods":["GET","POST"]}},
				 "Destination":{"Service":"admin","PrefixRewrite":"/","RequestTimeout":"2s","NumRetries":3,"RetryOnStatusCodes":[503]}},
				{"Destination":{"Service":"web"}}]}`,
			want: &ConfigEntry{Kind: KindServiceRouter, Name: "web", Router: &ServiceRouter{Routes: []ServiceRoute{
				{
					Match: &ServiceRouteMatch{HTTP: &ServiceRouteHTTPMatch{PathPrefix: "/admin",
						Header: []ServiceRouteHTTPMatchHeader{{Name: "x-debug", Exact: "1"}}, Methods: []string{"GET", "POST"}}},
					Destination: &ServiceRouteDestination{Service: "admin", PrefixRewrite: "/", RequestTimeout: Duration(2 * time.Second),
						NumRetries: 3, RetryOnStatusCodes: []uint32{503}},
				},
				{Destination: &ServiceRouteDestination{Service: "web"}},
			}}},
		},
		{
			name: "service-splitter",
			body: `{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":90},{"Weight":10,"Service":"web-v2"}]}`,
			want: &ConfigEntry{Kind: KindServiceSplitter, Name: "web", Splitter: &ServiceSplitter{Splits: []ServiceSplit{
				{Weight: 90}, {Weight: 10, Service: "web-v2"}}}},
		},
		{
			name: "splitter weights with decimals",
			body: `{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":33.33},{"Weight":33.33,"Service":"b"},{"Weight":33.34,"Service":"c"}]}`,
			want: &ConfigEntry{Kind: KindServiceSplitter, Name: "web", Splitter: &ServiceSplitter{Splits: []ServiceSplit{
				{Weight: 33.33}, {Weight: 33.33, Service: "b"}, {Weight: 33.34, Service: "c"}}}},
		},
		{
			name: "service-resolver",
			body: `{"Kind":"service-resolver","Name":"web","ConnectTimeout":"3s","LoadBalancer":{"Policy":"ring_hash",
				"RingHashConfig":{"MinimumRingSize":1024},"HashPolicies":[{"Field":"header","FieldValue":"x-user"},{"SourceIP":true}]}}`,
			want: &ConfigEntry{Kind: KindServiceResolver, Name: "web", Resolver: &ServiceResolver{
				ConnectTimeout: Duration(3 * time.Second),
				LoadBalancer: &LoadBalancer{Policy: LBRingHash, RingHashConfig: &RingHashConfig{MinimumRingSize: 1024},
					HashPolicies: []HashPolicy{{Field: "header", FieldValue: "x-user"}, {SourceIP: true}}},
			}},
		},
		{
			name: "resolver redirect",
			body: `{"Kind":"service-resolver","Name":"web","Redirect":{"Service":"web-new"}}`,
			want: &ConfigEntry{Kind: KindServiceResolver, Name: "web", Resolver: &ServiceResolver{Redirect: &ServiceResolverRedirect{Service: "web-new"}}},
		},
		// What consul/api always sends for service-defaults: empty
		// MeshGateway and Expose, zero indexes.
		{
			name: "consul/api empties",
			body: `{"Kind":"service-defaults","Name":"web","MeshGateway":{},"Expose":{},"CreateIndex":0,"ModifyIndex":0}`,
			want: &ConfigEntry{Kind: KindServiceDefaults, Name: "web", Defaults: &ServiceDefaults{}},
		},

		{name: "not JSON", body: `{"Kind":`, errs: []string{"Request decode failed"}},
		{name: "no kind", body: `{"Name":"web"}`, errs: []string{"Kind: missing"}},
		{name: "unknown kind", body: `{"Kind":"mesh","Name":"mesh"}`, errs: []string{`Kind: "mesh" is not supported`}},
		{
			name: "proxy-defaults access logs",
			body: `{"Kind":"proxy-defaults","Name":"global","MeshGateway":{},"Expose":{},"AccessLogs":{"Enabled":true,"Type":"file","Path":"/var/log/vmesh/access.log","JSONFormat":"{\"code\":\"%RESPONSE_CODE%\",\"id\":\"%REQ(X-REQUEST-ID):36%\",\"n\":{\"flags\":\"%RESPONSE_FLAGS%\"}}"}}`,
			want: &ConfigEntry{Kind: KindProxyDefaults, Name: "global", Proxy: &ProxyDefaults{AccessLogs: &AccessLogs{
				Enabled: true, Type: "file", Path: "/var/log/vmesh/access.log",
				JSONFormat: `{"code":"%RESPONSE_CODE%","id":"%REQ(X-REQUEST-ID):36%","n":{"flags":"%RESPONSE_FLAGS%"}}`}}},
		},
		{
			name: "proxy-defaults text format to stderr",
			body: `{"Kind":"proxy-defaults","Name":"global","AccessLogs":{"Enabled":true,"Type":"stderr","TextFormat":"[%START_TIME%] %RESPONSE_CODE% 100%%\n"}}`,
			want: &ConfigEntry{Kind: KindProxyDefaults, Name: "global", Proxy: &ProxyDefaults{AccessLogs: &AccessLogs{
				Enabled: true, Type: "stderr", TextFormat: "[%START_TIME%] %RESPONSE_CODE% 100%%\n"}}},
		},
		{name: "proxy-defaults not global", body: `{"Kind":"proxy-defaults","Name":"web"}`, errs: []string{`Name: "web": the proxy-defaults entry is named "global"`}},
		{name: "proxy-defaults unsupported field", body: `{"Kind":"proxy-defaults","Name":"global","Config":{"protocol":"http"}}`, errs: []string{"Config: not supported by vmesh"}},
		{name: "access logs both formats", body: `{"Kind":"proxy-defaults","Name":"global","AccessLogs":{"Enabled":true,"JSONFormat":"{}","TextFormat":"%RESPONSE_CODE%"}}`,
			errs: []string{"AccessLogs.JSONFormat: set at most one of JSONFormat and TextFormat"}},
		{name: "access logs file without path", body: `{"Kind":"proxy-defaults","Name":"global","AccessLogs":{"Enabled":true,"Type":"file"}}`,
			errs: []string{"AccessLogs.Path: missing"}},
		{name: "access logs relative path", body: `{"Kind":"proxy-defaults","Name":"global","AccessLogs":{"Type":"file","Path":"access.log"}}`,
			errs: []string{"AccessLogs.Path:", "absolute"}},
		{name: "access logs path for stdout", body: `{"Kind":"proxy-defaults","Name":"global","AccessLogs":{"Type":"stdout","Path":"/tmp/x"}}`,
			errs: []string{"AccessLogs.Path: applies to Type \"file\" only"}},
		{name: "access logs bad type", body: `{"Kind":"proxy-defaults","Name":"global","AccessLogs":{"Type":"syslog"}}`,
			errs: []string{`AccessLogs.Type: "syslog" is not one of`}},
		{name: "access logs bad JSON", body: `{"Kind":"proxy-defaults","Name":"global","AccessLogs":{"JSONFormat":"{code"}}`,
			errs: []string{"AccessLogs.JSONFormat: must be a JSON object"}},
		{name: "access logs unknown operator", body: `{"Kind":"proxy-defaults","Name":"global","AccessLogs":{"JSONFormat":"{\"a\":\"%RESPONSE_COD%\"}"}}`,
			errs: []string{`AccessLogs.JSONFormat["a"]: unknown command operator %RESPONSE_COD%`}},
		{name: "access logs unclosed operator", body: `{"Kind":"proxy-defaults","Name":"global","AccessLogs":{"TextFormat":"%RESPONSE_CODE"}}`,
			errs: []string{"AccessLogs.TextFormat: unclosed command operator"}},
		{name: "access logs REQ without header", body: `{"Kind":"proxy-defaults","Name":"global","AccessLogs":{"TextFormat":"%REQ()%"}}`,
			errs: []string{"AccessLogs.TextFormat: command operator %REQ()%: missing the header name"}},
		{name: "no name", body: `{"Kind":"service-defaults"}`, errs: []string{"Name: missing"}},
		{name: "bad name", body: `{"Kind":"service-defaults","Name":"a/b"}`, errs: []string{"Name:", "'/'"}},
		{name: "other namespace", body: `{"Kind":"service-defaults","Name":"web","Namespace":"ns1"}`, errs: []string{"Namespace"}},
		{name: "unknown field", body: `{"Kind":"service-defaults","Name":"web","Bogus":1}`, errs: []string{`"Bogus"`}},
		{name: "field of another kind", body: `{"Kind":"service-defaults","Name":"web","Splits":[]}`, errs: []string{`"Splits"`}},
		{name: "wrong type", body: `{"Kind":"service-resolver","Name":"web","ConnectTimeout":"soon"}`, errs: []string{"ConnectTimeout", `a duration such as "10s"`}},
		{name: "bad protocol", body: `{"Kind":"service-defaults","Name":"web","Protocol":"https"}`, errs: []string{`Protocol: "https" is not one of`}},
		{name: "unsupported defaults field", body: `{"Kind":"service-defaults","Name":"web","Mode":"transparent"}`, errs: []string{"Mode: not supported by vmesh"}},
		{name: "mesh gateway mode", body: `{"Kind":"service-defaults","Name":"web","MeshGateway":{"Mode":"local"}}`, errs: []string{"MeshGateway: not supported"}},
		{name: "negative limit", body: `{"Kind":"service-defaults","Name":"web","MaxInboundConnections":-1}`, errs: []string{"MaxInboundConnections"}},
		{name: "two paths", body: `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathExact":"/a","PathPrefix":"/b"}}}]}`, errs: []string{"Routes[0].Match.HTTP.PathExact", "at most one"}},
		{name: "relative path", body: `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathPrefix":"admin"}}}]}`, errs: []string{"Routes[0].Match.HTTP.PathPrefix", "start with /"}},
		{name: "bad regex", body: `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathRegex":"(a"}}}]}`, errs: []string{"Routes[0].Match.HTTP.PathRegex", "invalid regular expression"}},
		{name: "header without match", body: `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"Header":[{"Name":"x"}]}}}]}`, errs: []string{"Routes[0].Match.HTTP.Header[0].Present", "exactly one"}},
		{name: "header two matches", body: `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"Header":[{"Name":"x","Exact":"1","Prefix":"2"}]}}}]}`, errs: []string{"Header[0]"}},
		{name: "bad header name", body: `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"Header":[{"Name":"a b","Present":true}]}}}]}`, errs: []string{"Header[0].Name"}},
		{name: "bad method", body: `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"Methods":["get"]}}}]}`, errs: []string{"Methods[0]", "upper-case"}},
		{name: "rewrite without path", body: `{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"PrefixRewrite":"/"}}]}`, errs: []string{"Routes[0].Destination.PrefixRewrite"}},
		{name: "subset", body: `{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"ServiceSubset":"v2"}}]}`, errs: []string{"Routes[0].Destination.ServiceSubset", "not supported"}},
		{name: "bad status", body: `{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"RetryOnStatusCodes":[99]}}]}`, errs: []string{"RetryOnStatusCodes[0]"}},
		{name: "bad retry condition", body: `{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"RetryOn":["sometimes"]}}]}`, errs: []string{"RetryOn[0]", `"sometimes"`}},
		{name: "set host header", body: `{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"RequestHeaders":{"Set":{"Host":"x"}}}}]}`, errs: []string{"RequestHeaders.Set"}},
		{name: "no splits", body: `{"Kind":"service-splitter","Name":"web"}`, errs: []string{"Splits: at least one"}},
		{name: "weights not 100", body: `{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":90},{"Weight":20,"Service":"b"}]}`, errs: []string{"add up to 100, got 110"}},
		{name: "negative weight", body: `{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":-10},{"Weight":110,"Service":"b"}]}`, errs: []string{"Splits[0].Weight", "Splits[1].Weight"}},
		{name: "subsets", body: `{"Kind":"service-resolver","Name":"web","Subsets":{"v1":{"Filter":"Service.Meta.version == 1"}}}`, errs: []string{"Subsets: not supported"}},
		{name: "failover", body: `{"Kind":"service-resolver","Name":"web","Failover":{"*":{"Datacenters":["dc2"]}}}`, errs: []string{"Failover: not supported"}},
		{name: "redirect to datacenter", body: `{"Kind":"service-resolver","Name":"web","Redirect":{"Service":"x","Datacenter":"dc2"}}`, errs: []string{"Redirect.Datacenter", "only Redirect.Service"}},
		{name: "redirect to itself", body: `{"Kind":"service-resolver","Name":"web","Redirect":{"Service":"Web"}}`, errs: []string{"Redirect.Service", "itself"}},
		{name: "bad policy", body: `{"Kind":"service-resolver","Name":"web","LoadBalancer":{"Policy":"fastest"}}`, errs: []string{"LoadBalancer.Policy", `"fastest"`}},
		{name: "ring config on round robin", body: `{"Kind":"service-resolver","Name":"web","LoadBalancer":{"Policy":"round_robin","RingHashConfig":{"MinimumRingSize":1}}}`, errs: []string{"LoadBalancer.RingHashConfig"}},
		{name: "ring min above max", body: `{"Kind":"service-resolver","Name":"web","LoadBalancer":{"Policy":"ring_hash","RingHashConfig":{"MinimumRingSize":10,"MaximumRingSize":5}}}`, errs: []string{"MinimumRingSize"}},
		{name: "hash policy without field", body: `{"Kind":"service-resolver","Name":"web","LoadBalancer":{"Policy":"maglev","HashPolicies":[{"Terminal":true}]}}`, errs: []string{"HashPolicies[0].Field"}},
		{name: "hash policies on least request", body: `{"Kind":"service-resolver","Name":"web","LoadBalancer":{"Policy":"least_request","HashPolicies":[{"SourceIP":true}]}}`, errs: []string{"LoadBalancer.HashPolicies"}},
		{name: "negative timeout", body: `{"Kind":"service-resolver","Name":"web","ConnectTimeout":"-1s"}`, errs: []string{"ConnectTimeout: must not be negative"}},
		{name: "every problem at once", body: `{"Kind":"service-resolver","Name":"","ConnectTimeout":"-1s","DefaultSubset":"v1"}`, errs: []string{"Name: missing", "ConnectTimeout", "DefaultSubset"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeConfigEntry([]byte(tc.body))
			if len(tc.errs) > 0 {
				if err == nil {
					t.Fatalf("decoded %+v, want an error", got)
				}
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("error %v does not wrap ErrInvalid", err)
				}
				for _, w := range tc.errs {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %s\nwant %s", dump(got), dump(tc.want))
			}
			// What we render decodes back to the same entry.
			out, err := json.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			again, err := DecodeConfigEntry(out)
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Errorf("round trip of %s: %+v, %v", out, again, err)
			}
		})
	}
}

func dump(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestStoreConfigEntryApply(t *testing.T) {
	s := NewStore()
	web := func(proto string, modify uint64) *ConfigEntry {
		return &ConfigEntry{Kind: KindServiceDefaults, Name: "web", Defaults: &ServiceDefaults{Protocol: proto}, ModifyIndex: modify}
	}
	steps := []struct {
		idx     uint64
		op      ConfigEntryOp
		entry   *ConfigEntry
		wantErr error
		// after the step
		proto  string // "" = absent
		create uint64
	}{
		{idx: 2, op: ConfigEntryUpsertCAS, entry: web("http", 1), wantErr: ErrCASConflict},
		{idx: 3, op: ConfigEntryUpsertCAS, entry: web("http", 0), proto: "http", create: 3},
		{idx: 4, op: ConfigEntryUpsert, entry: web("grpc", 0), proto: "grpc", create: 3},
		{idx: 5, op: ConfigEntryUpsertCAS, entry: web("tcp", 3), wantErr: ErrCASConflict, proto: "grpc", create: 3},
		{idx: 6, op: ConfigEntryUpsertCAS, entry: web("tcp", 4), proto: "tcp", create: 3},
		{idx: 7, op: ConfigEntryDeleteCAS, entry: web("", 4), wantErr: ErrCASConflict, proto: "tcp", create: 3},
		{idx: 8, op: ConfigEntryDeleteCAS, entry: web("", 6)},
		{idx: 9, op: ConfigEntryDelete, entry: web("", 0)},
		{idx: 10, op: ConfigEntryDeleteCAS, entry: web("", 0), wantErr: ErrCASConflict},
		{idx: 11, op: "rename", entry: web("", 0), wantErr: ErrInvalid},
	}
	for _, st := range steps {
		err := s.ConfigEntryApply(st.idx, st.op, st.entry)
		if !errors.Is(err, st.wantErr) || (st.wantErr == nil && err != nil) {
			t.Fatalf("step %d (%s): err = %v, want %v", st.idx, st.op, err, st.wantErr)
		}
		// The name is case-insensitive.
		_, got, err := s.ConfigEntry(nil, KindServiceDefaults, "WEB")
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case st.proto == "" && got != nil:
			t.Fatalf("step %d: entry %+v, want none", st.idx, got)
		case st.proto != "" && (got == nil || got.Defaults.Protocol != st.proto || got.CreateIndex != st.create):
			t.Fatalf("step %d: entry %+v, want protocol %s created at %d", st.idx, got, st.proto, st.create)
		}
	}
	// Writes that changed something moved the table's index; failed CAS
	// and deleting what is not there did not.
	if idx, _, _ := s.ConfigEntries(nil, ""); idx != 8 {
		t.Errorf("index = %d, want 8 (the last write that changed something)", idx)
	}
}
