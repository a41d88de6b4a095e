package httpapi

import (
	"net/http"
	"strings"
)

// requestToken is the ACL token a request carries, where Consul looks for
// it: the X-Consul-Token header, an "Authorization: Bearer" header, then
// the ?token= parameter. "" is the anonymous token.
func requestToken(r *http.Request) string {
	if t := r.Header.Get("X-Consul-Token"); t != "" {
		return t
	}
	if h := r.Header.Get("Authorization"); h != "" {
		if scheme, t, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(t)
		}
	}
	return r.URL.Query().Get("token")
}
