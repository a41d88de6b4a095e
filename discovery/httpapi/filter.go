package httpapi

import (
	"net/http"
	"strings"

	"github.com/hashicorp/go-bexpr"
)

// ?filter= and ?node-meta=, as Consul has them. A filter is Consul's
// expression language, evaluated by go-bexpr (the library Consul uses)
// over the wire objects an endpoint returns, so the field names are
// Consul's ("ServiceTags", "Node.Meta.rack", "Checks.Status").
// ?node-meta=key:value (repeatable) keeps the entries whose node has every
// pair. An endpoint that has neither refuses them (400) rather than
// ignoring a parameter that would change the answer.

// filterRoutes are the routes that take ?filter=; nodeMetaRoutes those
// that take ?node-meta=.
var (
	filterRoutes = map[string]bool{
		"GET /v1/agent/services":               true,
		"GET /v1/agent/checks":                 true,
		"GET /v1/catalog/services":             true,
		"GET /v1/catalog/service/{name}":       true,
		"GET /v1/catalog/nodes":                true,
		"GET /v1/catalog/node/{node}":          true,
		"GET /v1/catalog/node-services/{node}": true,
		"GET /v1/health/service/{name}":        true,
		"GET /v1/health/checks/{name}":         true,
		"GET /v1/health/state/{state}":         true,
		"GET /v1/health/node/{node}":           true,
		"GET /v1/health/connect/{name}":        true,
		"GET /v1/catalog/connect/{name}":       true,
		"GET /v1/health/ingress/{name}":        true,
	}
	nodeMetaRoutes = map[string]bool{
		"GET /v1/catalog/services":       true,
		"GET /v1/catalog/service/{name}": true,
		"GET /v1/catalog/nodes":          true,
		"GET /v1/health/service/{name}":  true,
		"GET /v1/health/checks/{name}":   true,
		"GET /v1/health/state/{state}":   true,
		"GET /v1/health/connect/{name}":  true,
		"GET /v1/catalog/connect/{name}": true,
		"GET /v1/health/ingress/{name}":  true,
	}
)

// checkFilterParams refuses ?filter= or ?node-meta= on a route that does
// not apply them.
func checkFilterParams(r *http.Request) error {
	q := r.URL.Query()
	if q.Get("filter") != "" && !filterRoutes[r.Pattern] {
		return badRequest("?filter is not supported on %s", r.URL.Path)
	}
	if q.Get("node-meta") != "" && !nodeMetaRoutes[r.Pattern] {
		return badRequest("?node-meta is not supported on %s", r.URL.Path)
	}
	return nil
}

// requestFilter compiles the request's ?filter=; nil when there is none.
func requestFilter(r *http.Request) (*bexpr.Evaluator, error) {
	expr := r.URL.Query().Get("filter")
	if expr == "" {
		return nil, nil
	}
	ev, err := bexpr.CreateEvaluator(expr)
	if err != nil {
		return nil, badRequest("Failed to create boolean expression evaluator for ?filter=%q: %v", expr, err)
	}
	return ev, nil
}

// filterSlice keeps the elements of in that match ev (all when ev is nil).
func filterSlice[T any](ev *bexpr.Evaluator, in []T) ([]T, error) {
	if ev == nil {
		return in, nil
	}
	out := in[:0:0]
	for _, v := range in {
		ok, err := ev.Evaluate(v)
		if err != nil {
			return nil, badRequest("Failed to apply the filter: %v", err)
		}
		if ok {
			out = append(out, v)
		}
	}
	return out, nil
}

// filterMap keeps the values of in that match ev.
func filterMap[T any](ev *bexpr.Evaluator, in map[string]T) (map[string]T, error) {
	if ev == nil {
		return in, nil
	}
	for k, v := range in {
		ok, err := ev.Evaluate(v)
		if err != nil {
			return nil, badRequest("Failed to apply the filter: %v", err)
		}
		if !ok {
			delete(in, k)
		}
	}
	return in, nil
}

// nodeMetaFilter parses ?node-meta=key:value pairs; nil when there are
// none.
func nodeMetaFilter(r *http.Request) (map[string]string, error) {
	vals := r.URL.Query()["node-meta"]
	if len(vals) == 0 {
		return nil, nil
	}
	want := map[string]string{}
	for _, kv := range vals {
		k, v, ok := strings.Cut(kv, ":")
		if !ok || k == "" {
			return nil, badRequest("Invalid node-meta %q: want key:value", kv)
		}
		want[k] = v
	}
	return want, nil
}

// metaMatches says whether meta has every pair of want.
func metaMatches(meta, want map[string]string) bool {
	for k, v := range want {
		if got, ok := meta[k]; !ok || got != v {
			return false
		}
	}
	return true
}
