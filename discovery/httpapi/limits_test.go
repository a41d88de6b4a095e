package httpapi

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vmesh/vmesh/discovery"
)

// TestBodyLimits: a body over its limit is refused with 413 and a message
// naming the limit, before anything is decoded or written; a body just
// under it is read (and then judged on its content).
func TestBodyLimits(t *testing.T) {
	t.Parallel()
	s := discovery.NewStore()
	if err := s.EnsureNode(1, &discovery.Node{Name: "n1", Address: "127.0.0.1", Datacenter: "dc1"}); err != nil {
		t.Fatal(err)
	}
	a := &API{Store: s, Writer: &fakeWriter{s: s, idx: 1}, Cluster: fakeCluster{}, NodeName: "n1", Datacenter: "dc1"}
	mux := http.NewServeMux()
	a.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	// A JSON string of n bytes of padding: valid JSON of a chosen size.
	pad := func(n int) string { return `"` + strings.Repeat("x", n) + `"` }
	for _, c := range []struct {
		name, path, body string
		code             int
		msg              string
	}{
		{"register over", "/v1/agent/service/register", `{"Name":"web","Notes":` + pad(maxBody) + `}`, 413, fmt.Sprintf("the limit is %d bytes", maxBody)},
		{"register under", "/v1/agent/service/register", `{"Name":"web","Bogus":` + pad(1024) + `}`, 400, "Bogus"},
		{"config over", "/v1/config", `{"Kind":"service-defaults","Name":"web","Meta":{"a":` + pad(maxBody) + `}}`, 413, fmt.Sprintf("the limit is %d bytes", maxBody)},
		{"intention over", "/v1/connect/intentions/exact?source=a&destination=b", `{"Description":` + pad(maxBody) + `}`, 413, fmt.Sprintf("the limit is %d bytes", maxBody)},
		{"kv over", "/v1/kv/big", strings.Repeat("x", maxKVSize+1), 413, "524288"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequest("PUT", srv.URL+c.path, bytes.NewReader([]byte(c.body)))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != c.code || !strings.Contains(string(b), c.msg) {
				t.Errorf("PUT %s (%d bytes) = %d %q, want %d mentioning %q", c.path, len(c.body), resp.StatusCode, b, c.code, c.msg)
			}
		})
	}
}
