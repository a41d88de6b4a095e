package xds

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/vmesh/vmesh/discovery"
)

// chooser turns fuzz input into choices; when the input runs out it goes on
// with a PRNG seeded from it, so short inputs still make rich catalogs and
// the fuzzer's mutations still steer the first choices.
type chooser struct {
	in  []byte
	rng *rand.Rand
}

func newChooser(in []byte) *chooser {
	var seed [16]byte
	copy(seed[:], in)
	return &chooser{in: in, rng: rand.New(rand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:])))}
}

func (c *chooser) n(limit int) int {
	if limit <= 0 {
		return 0
	}
	if len(c.in) > 0 {
		b := c.in[0]
		c.in = c.in[1:]
		return int(b) % limit
	}
	return c.rng.IntN(limit)
}

func pick[T any](c *chooser, xs ...T) T { return xs[c.n(len(xs))] }

var (
	fuzzServices  = []string{"web", "Web", "api", "db", "dns", "orders", "web-v2", "x"}
	fuzzAddresses = []string{"", "10.0.0.1", "10.0.0.2", "127.0.0.1", "::1", "fe80::1%eth0", "db.example.com", "256.1.1.1", "0.0.0.0", "2001:db8::5"}
	fuzzProtocols = append([]string{""}, discovery.Protocols...)
)

// randomCatalog builds a catalog the store could hold: config entries pass
// the API's validation (what fails it never reaches the store), everything
// else is as messy as registrations allow.
func randomCatalog(c *chooser) (*discovery.MeshState, Options) {
	st := &discovery.MeshState{Index: uint64(c.n(1000) + 1)}
	nodes := c.n(5)
	for i := range nodes {
		meta := map[string]string(nil)
		if c.n(5) == 0 {
			meta = map[string]string{MetaExternalNode: "true"}
		}
		st.Nodes = append(st.Nodes, &discovery.Node{Name: fmt.Sprintf("node-%d", i), Address: pick(c, fuzzAddresses...), Meta: meta})
	}
	for i := range c.n(12) {
		in := &discovery.Instance{
			Node: fmt.Sprintf("node-%d", c.n(nodes+1)), ID: fmt.Sprintf("i-%d", i), Service: pick(c, fuzzServices...),
			Address: pick(c, fuzzAddresses...), Port: pick(c, 0, 80, 8080, 65535, 65536, -1),
			Protocol: pick(c, fuzzProtocols...), Weights: discovery.Weights{Passing: c.n(3), Warning: c.n(2)},
		}
		if c.n(4) == 0 {
			in.Meta = map[string]string{MetaExternalSource: "k8s"}
		}
		for range c.n(3) {
			in.Upstreams = append(in.Upstreams, discovery.Upstream{
				DestinationName: pick(c, fuzzServices...), LocalBindAddress: pick(c, "127.0.0.1", "127.0.0.2", "::1", "bad"),
				LocalBindPort: pick(c, 15001, 15443, 19001, 19002, 0),
			})
		}
		st.Instances = append(st.Instances, in)
		if c.n(2) == 0 {
			st.Checks = append(st.Checks, &discovery.Check{Node: in.Node, CheckID: "c" + in.ID, ServiceID: in.ID,
				Status: pick(c, discovery.HealthPassing, discovery.HealthWarning, discovery.HealthCritical)})
		}
	}
	if nodes > 0 && c.n(3) == 0 {
		st.Checks = append(st.Checks, &discovery.Check{Node: "node-0", CheckID: "serf", Status: discovery.HealthCritical})
	}
	for range c.n(8) {
		if e, err := discovery.DecodeConfigEntry(randomEntry(c)); err == nil {
			st.ConfigEntries = append(st.ConfigEntries, e)
		}
	}
	// Intentions as the store holds them: one per pair (case-insensitive).
	pairs := map[[2]string]bool{}
	for i := range c.n(8) {
		src, dst := pick(c, append([]string{"*"}, fuzzServices...)...), pick(c, append([]string{"*"}, fuzzServices...)...)
		p := [2]string{strings.ToLower(src), strings.ToLower(dst)}
		if pairs[p] {
			continue
		}
		pairs[p] = true
		st.Intentions = append(st.Intentions, &discovery.Intention{ID: fmt.Sprint("ixn-", i), SourceName: src, DestinationName: dst,
			Action: pick(c, discovery.IntentionActionAllow, discovery.IntentionActionDeny)})
	}
	st.TrustDomain = pick(c, "", "vmesh.local")
	opts := Options{VIPs: map[string]VIP{}, IntentionsDefaultAllow: c.n(2) == 0}
	for range c.n(4) {
		opts.VIPs[pick(c, fuzzServices...)] = VIP{IP: pick(c, "240.0.0.1", "240.0.0.2", "fd00::1", "bogus"), Ports: pick(c, nil, []uint32{80}, []uint32{80, 443})}
	}
	return st, opts
}

func randomEntry(c *chooser) []byte {
	name := pick(c, fuzzServices...)
	var e map[string]any
	switch c.n(4) {
	case 0:
		e = map[string]any{"Kind": "service-defaults", "Protocol": pick(c, fuzzProtocols...),
			"LocalConnectTimeoutMs": c.n(2) * 100, "LocalRequestTimeoutMs": c.n(2) * 1000, "MaxInboundConnections": c.n(3)}
	case 1:
		var routes []any
		for range c.n(4) {
			http := map[string]any{}
			switch c.n(4) {
			case 0:
				http["PathPrefix"] = "/p"
			case 1:
				http["PathExact"] = "/e"
			case 2:
				http["PathRegex"] = "/r[0-9]+"
			}
			if c.n(2) == 0 {
				http["Header"] = []any{pick[map[string]any](c,
					map[string]any{"Name": "x-a", "Exact": "1", "Invert": true},
					map[string]any{"Name": "x-b", "Present": true},
					map[string]any{"Name": "x-c", "Regex": "a.*"},
					map[string]any{"Name": "x-d", "Suffix": "z", "IgnoreCase": true})}
			}
			if c.n(3) == 0 {
				http["Methods"] = pick[[]string](c, []string{"GET"}, []string{"GET", "PUT"})
			}
			if c.n(4) == 0 {
				http["QueryParam"] = []any{map[string]any{"Name": "q", "Regex": "v.*"}}
			}
			dest := map[string]any{"Service": pick(c, append([]string{""}, fuzzServices...)...), "NumRetries": c.n(3),
				"RetryOnConnectFailure": c.n(2) == 0, "RequestTimeout": pick(c, "", "1s"),
				"RetryOn": pick[[]string](c, nil, []string{"5xx"}), "RetryOnStatusCodes": pick[[]int](c, nil, []int{503})}
			if _, ok := http["PathPrefix"]; ok && c.n(2) == 0 {
				dest["PrefixRewrite"] = "/"
			}
			if c.n(4) == 0 {
				dest["RequestHeaders"] = map[string]any{"Add": map[string]string{"x-a": "1"}, "Remove": []string{"x-b"}}
			}
			routes = append(routes, map[string]any{"Match": map[string]any{"HTTP": http}, "Destination": dest})
		}
		e = map[string]any{"Kind": "service-router", "Routes": routes}
	case 2:
		var splits []any
		n := c.n(4) + 1
		left := 100.0
		for i := range n {
			w := float64(c.n(101))
			if i == n-1 || w > left {
				w = left
			}
			left -= w
			splits = append(splits, map[string]any{"Weight": w, "Service": pick(c, append([]string{""}, fuzzServices...)...)})
		}
		e = map[string]any{"Kind": "service-splitter", "Splits": splits}
	default:
		lb := map[string]any{"Policy": pick(c, "", "round_robin", "least_request", "random", "ring_hash", "maglev")}
		switch lb["Policy"] {
		case "ring_hash":
			lb["RingHashConfig"] = map[string]any{"MinimumRingSize": c.n(3) * 512, "MaximumRingSize": 4096}
			fallthrough
		case "maglev":
			lb["HashPolicies"] = []any{pick[map[string]any](c,
				map[string]any{"Field": "header", "FieldValue": "x-u"},
				map[string]any{"Field": "cookie", "FieldValue": "s", "CookieConfig": map[string]any{"Session": true}},
				map[string]any{"SourceIP": true, "Terminal": true})}
		case "least_request":
			lb["LeastRequestConfig"] = map[string]any{"ChoiceCount": c.n(4)}
		}
		e = map[string]any{"Kind": "service-resolver", "ConnectTimeout": pick(c, "", "250ms"), "RequestTimeout": pick(c, "", "2s"), "LoadBalancer": lb}
		if c.n(3) == 0 {
			e["Redirect"] = map[string]any{"Service": pick(c, fuzzServices...)}
		}
	}
	e["Name"] = name
	b, _ := json.Marshal(e)
	return b
}

// checkCatalog builds the snapshot of every kind of client and checks the
// properties every snapshot must have.
func checkCatalog(t *testing.T, in []byte) {
	st, opts := randomCatalog(newChooser(in))
	v := NewView(st, opts)
	clients := []*core.Node{{Id: "app", UserAgentName: "gRPC Go"}, {Id: "envoy", UserAgentName: "envoy"}}
	for _, n := range st.Nodes {
		clients = append(clients, &core.Node{Id: n.Name})
	}
	for _, n := range clients {
		info := v.NodeInfo(n)
		snap, err := Build(v, info)
		if err != nil {
			if errors.Is(err, ErrTranslate) {
				continue // e.g. a name that is not UTF-8: refused, not served
			}
			t.Fatalf("Build for %s: %v", n.Id, err)
		}
		if err := Check(snap); err != nil {
			cat, _ := json.Marshal(st)
			t.Fatalf("Check for %s: %v\ncatalog: %s\noptions: %+v", n.Id, err, cat, opts)
		}
		// Inbound RBAC decides as the intentions do (intentions_test.go).
		if info.Mesh() {
			checkRBACDecisions(t, snap, st.Intentions, st.TrustDomain, opts.IntentionsDefaultAllow)
		}
		// Pure: the same input gives the same output.
		again, err := Build(NewView(st, opts), info)
		if err != nil {
			t.Fatal(err)
		}
		a, err := SnapshotJSON(snap)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := SnapshotJSON(again)
		if !bytes.Equal(a, b) {
			t.Fatalf("Build for %s is not deterministic", n.Id)
		}
	}
}

// FuzzBuild: go test -fuzz FuzzBuild ./dataplane/xds explores further; as
// a plain test it runs the seed corpus.
func FuzzBuild(f *testing.F) {
	for _, seed := range [][]byte{
		nil, {0}, {1, 2, 3, 4, 5, 6, 7, 8}, []byte("vmesh"), bytes.Repeat([]byte{0xff}, 64),
		{4, 3, 7, 2, 9, 1, 1, 0, 5, 5, 5, 5, 2, 3, 1, 0, 0, 7, 11, 3, 3, 3},
	} {
		f.Add(seed)
	}
	f.Fuzz(checkCatalog)
}

// TestBuildRandomCatalogs runs the fuzz property over many PRNG-made
// catalogs on every test run.
func TestBuildRandomCatalogs(t *testing.T) {
	n := 200
	if testing.Short() {
		n = 50
	}
	for i := range n {
		var seed [16]byte
		binary.LittleEndian.PutUint64(seed[:], uint64(i)*0x9e3779b97f4a7c15)
		binary.LittleEndian.PutUint64(seed[8:], uint64(i))
		checkCatalog(t, seed[:])
	}
}
