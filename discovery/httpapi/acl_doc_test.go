package httpapi

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/vmesh/vmesh/discovery"
)

// routePattern is a route as the package registers it: a string literal
// that is a method and a path under /v1/ and nothing else.
var routePattern = regexp.MustCompile(`"((?:GET|PUT|POST|DELETE) /v1/[A-Za-z0-9_./{}-]*)"`)

// docEndpoint is an endpoint as docs/acl.md writes it in a table.
var docEndpoint = regexp.MustCompile("`((?:GET|PUT|POST|DELETE) /v1/[^`]*)`")

// docStyle writes a route as the docs do: {id} and {key...} as :id, :key.
func docStyle(pattern string) string {
	return regexp.MustCompile(`\{([a-z]+)(\.\.\.)?\}`).ReplaceAllString(pattern, ":$1")
}

// TestACLDocCoversEveryRoute: docs/acl.md's tables name every route this
// package registers, with the rule it needs, and every endpoint they name
// is served by exactly that route. A new endpoint without a row fails
// here.
func TestACLDocCoversEveryRoute(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "acl.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for line := range strings.SplitSeq(string(doc), "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		first, _, _ := strings.Cut(strings.TrimPrefix(line, "|"), "|")
		for _, m := range docEndpoint.FindAllStringSubmatch(first, -1) {
			documented[m[1]] = true
		}
	}

	sources, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	registered := map[string]bool{}
	for _, f := range sources {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range routePattern.FindAllStringSubmatch(string(src), -1) {
			registered[docStyle(m[1])] = true
		}
	}
	if len(registered) < 50 {
		t.Fatalf("found %d routes in the package's source; the pattern no longer finds them", len(registered))
	}
	var missing []string
	for r := range registered {
		if !documented[r] {
			missing = append(missing, r)
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("routes without a row in docs/acl.md:\n%s", strings.Join(missing, "\n"))
	}

	// Every documented endpoint is a route of the API with everything
	// mounted, not the catch-all 404.
	s := discovery.NewStore()
	h := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	a := &API{Store: s, Writer: &fakeWriter{s: s}, Cluster: fakeCluster{}, NodeName: "n1", Datacenter: "dc1",
		Operator: &fakeOperator{}, Raft: &fakeRaft{}, Diagnostics: Diagnostics{XDSClients: h, XDSConfigDump: h, Metrics: h}}
	mux := http.NewServeMux()
	a.Register(mux)
	for e := range documented {
		method, path, _ := strings.Cut(e, " ")
		req := httptest.NewRequest(method, regexp.MustCompile(`:[a-z]+`).ReplaceAllString(path, "x1"), nil)
		if _, pattern := mux.Handler(req); docStyle(pattern) != e {
			t.Errorf("docs/acl.md names %s, which the API serves as %q", e, pattern)
		}
	}
}
