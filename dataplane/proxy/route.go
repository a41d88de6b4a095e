package proxy

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// Routing a request, as Envoy's router does: the virtual host by the
// request's authority, the first route whose match holds, then a cluster
// of its action (by weight), the hash key for ring hash and maglev, and
// the header changes.

// reqView is what route matching reads of a request.
type reqView struct {
	r *http.Request
	// path is the request's :path (escaped, with its query); pathOnly
	// without the query.
	path, pathOnly string
	scheme         string
	query          url.Values // parsed on first use
}

func newReqView(r *http.Request, tls bool) *reqView {
	v := new(reqView)
	v.init(r, tls)
	return v
}

func (v *reqView) init(r *http.Request, tls bool) {
	*v = reqView{r: r, pathOnly: r.URL.EscapedPath(), scheme: "http"}
	if r.URL.Opaque != "" || v.pathOnly == "" {
		v.pathOnly = r.URL.RequestURI()
		if i := strings.IndexByte(v.pathOnly, '?'); i >= 0 {
			v.pathOnly = v.pathOnly[:i]
		}
	}
	v.path = v.pathOnly
	if r.URL.RawQuery != "" {
		v.path += "?" + r.URL.RawQuery
	}
	if tls {
		v.scheme = "https"
	}
}

// header returns a header's values joined with ",", as Envoy reads a
// header for matching, and whether it is present.
func (v *reqView) header(name string) (string, bool) {
	switch name {
	case ":method":
		return v.r.Method, true
	case ":path":
		return v.path, true
	case ":authority", "host":
		return v.r.Host, v.r.Host != ""
	case ":scheme":
		return v.scheme, true
	}
	vals := v.r.Header.Values(name)
	if len(vals) == 0 {
		return "", false
	}
	return strings.Join(vals, ","), true
}

func (v *reqView) queryValue(name string) (string, bool) {
	if v.query == nil {
		// A malformed pair is skipped; the rest still counts.
		v.query, _ = url.ParseQuery(v.r.URL.RawQuery)
	}
	vals, ok := v.query[name]
	if !ok {
		return "", false
	}
	return vals[0], true
}

// vhost picks the virtual host for a request's authority as Envoy does —
// an exact domain, then the longest suffix wildcard, then the longest
// prefix wildcard, "*" last — trying each kind with the authority as
// sent, then without its port (so a port no domain names is ignored).
func (rc *routeConfigSpec) vhost(authority string) *vhostSpec {
	h := strings.ToLower(authority)
	bare := stripPort(h)
	hosts := []string{h, bare}
	if rc.ignorePort || bare == h {
		hosts = hosts[1:]
	}
	for _, x := range hosts {
		if v := rc.exact[x]; v != nil {
			return v
		}
	}
	// A wildcard stands for at least one character.
	for _, x := range hosts {
		for _, w := range rc.suffixes {
			if len(x) > len(w.part) && strings.HasSuffix(x, w.part) {
				return w.vhost
			}
		}
	}
	for _, x := range hosts {
		for _, w := range rc.prefixes {
			if len(x) > len(w.part) && strings.HasPrefix(x, w.part) {
				return w.vhost
			}
		}
	}
	return rc.star
}

// stripPort drops a ":port" from a host ("[::1]:80" -> "[::1]").
func stripPort(h string) string {
	i := strings.LastIndexByte(h, ':')
	if i < 0 || strings.Contains(h[i:], "]") {
		return h
	}
	if strings.HasPrefix(h, "[") || strings.Count(h, ":") == 1 {
		return h[:i]
	}
	return h // an IPv6 address without brackets has no port
}

// route is the first route of the virtual host whose match holds (nil:
// none).
func (rc *routeConfigSpec) route(v *reqView) *routeSpec {
	vh := rc.vhost(v.r.Host)
	if vh == nil {
		return nil
	}
	for _, rt := range vh.routes {
		if rt.match.matches(v) {
			return rt
		}
	}
	return nil
}

func (m *routeMatch) matches(v *reqView) bool {
	switch m.kind {
	case pathPrefix:
		p := v.path
		if !m.caseSensitive {
			p = strings.ToLower(p)
		}
		if !strings.HasPrefix(p, m.value) {
			return false
		}
	case pathExact:
		p := v.pathOnly
		if !m.caseSensitive {
			p = strings.ToLower(p)
		}
		if p != m.value {
			return false
		}
	case pathRegex:
		if !m.re.MatchString(v.pathOnly) {
			return false
		}
	}
	for i := range m.headers {
		if !m.headers[i].matches(v) {
			return false
		}
	}
	for _, q := range m.query {
		val, ok := v.queryValue(q.name)
		if !ok || (q.str != nil && !q.str(val)) {
			return false
		}
	}
	return true
}

// matches follows Envoy: a missing header never matches a string matcher,
// inverted or not (unless treated as empty); present_match compares
// presence, and invert_match flips it.
func (h *headerMatch) matches(v *reqView) bool {
	val, ok := v.header(h.name)
	if h.present != nil {
		return (ok == *h.present) != h.invert
	}
	if !ok {
		if !h.missingAsEmpty {
			return false
		}
		val = ""
	}
	return h.str(val) != h.invert
}

// pick chooses the cluster of a route action: the only one, or one by
// weight.
func (a *routeAction) pick() *routeCluster {
	if len(a.clusters) == 1 {
		return &a.clusters[0]
	}
	n := rand.Uint64N(a.total)
	for i := range a.clusters {
		if n < uint64(a.clusters[i].weight) {
			return &a.clusters[i]
		}
		n -= uint64(a.clusters[i].weight)
	}
	return &a.clusters[len(a.clusters)-1]
}

// hashKey is the request's hash for ring hash and maglev, from the
// action's hash policies in order (Envoy combines them by rotating the
// running hash left one bit and XORing the next; a terminal policy that
// produced a key ends the list). setCookie is a Set-Cookie header to add
// to the response when a cookie policy generated the cookie.
func (a *routeAction) hashKey(v *reqView, remote string) (key uint64, ok bool, setCookie string) {
	for _, h := range a.hash {
		var val string
		have := false
		switch h.kind {
		case hashHeader:
			if vals := v.r.Header.Values(h.name); len(vals) > 0 {
				if len(vals) > 1 {
					vals = slices.Clone(vals)
					slices.Sort(vals)
				}
				val, have = strings.Join(vals, ""), true
			} else if h.name == "host" || h.name == ":authority" {
				val, have = v.r.Host, v.r.Host != ""
			}
		case hashCookie:
			if c, err := v.r.Cookie(h.name); err == nil {
				val, have = c.Value, true
			} else if h.hasTTL {
				// As Envoy: the value is a hash of the downstream address,
				// set on the response so the client sends it again.
				val, have = fmt.Sprintf("%016x", xxhash.Sum64String(remote)), true
				setCookie = makeSetCookie(h.name, val, h.path, h.ttl)
			}
		case hashQuery:
			val, have = v.queryValue(h.name)
		case hashSourceIP:
			if host := remoteIP(remote); host != "" {
				val, have = host, true
			}
		}
		if !have {
			continue
		}
		hv := xxhash.Sum64String(val)
		if ok {
			key = bits.RotateLeft64(key, 1) ^ hv
		} else {
			key, ok = hv, true
		}
		if h.terminal {
			break
		}
	}
	return key, ok, setCookie
}

// makeSetCookie renders a cookie as Envoy's cookie hash policy does.
func makeSetCookie(name, value, path string, ttl time.Duration) string {
	s := name + `="` + value + `"`
	if secs := int64(ttl / time.Second); secs > 0 {
		s += fmt.Sprintf("; Max-Age=%d", secs)
	}
	if path != "" {
		s += "; Path=" + path
	}
	return s + "; HttpOnly"
}

func remoteIP(remote string) string {
	i := strings.LastIndexByte(remote, ':')
	if i < 0 {
		return remote
	}
	return strings.Trim(remote[:i], "[]")
}

// apply makes one level's header changes: removals, then additions.
func (m *headerMutation) apply(h http.Header) {
	for _, k := range m.remove {
		h.Del(k)
	}
	for _, a := range m.add {
		_, has := h[a.key]
		switch a.action {
		case core.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			h.Add(a.key, a.value)
		case core.HeaderValueOption_ADD_IF_ABSENT:
			if !has {
				h.Set(a.key, a.value)
			}
		case core.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			h.Set(a.key, a.value)
		case core.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if has {
				h.Set(a.key, a.value)
			}
		}
	}
}

// rewritePath replaces the matched prefix (or path) of the request's path
// with the route's prefix_rewrite.
func (rt *routeSpec) rewritePath(u *url.URL) {
	pr := rt.action.prefixRewrite
	if pr == "" {
		return
	}
	raw := u.EscapedPath()
	n := min(len(rt.match.value), len(raw))
	next := pr + raw[n:]
	if p, err := url.PathUnescape(next); err == nil {
		u.Path, u.RawPath = p, next
	} else {
		u.Path, u.RawPath = next, ""
	}
	if u.RawPath == u.Path {
		u.RawPath = ""
	}
}
