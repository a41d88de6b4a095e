package proxy

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
)

// Path normalization, as Envoy's HTTP connection manager does it
// (normalize_path, merge_slashes, path_with_escaped_slashes_action):
// before anything reads the path, so a route or rule written for "/admin"
// also catches "/%61dmin", "//admin" and "/x/../admin", which an
// application reads as /admin. The normalized path is the one forwarded,
// so the application reads exactly what was routed.

// escapedSlashes is path_with_escaped_slashes_action: what a %2F or %5C
// in the path does.
type escapedSlashes int

const (
	slashesKeep     escapedSlashes = iota // left as they are
	slashesReject                         // the request gets 400
	slashesUnescape                       // decoded to / and \ (then normalized)
)

// pathNorm is an HTTP connection manager's path settings.
type pathNorm struct {
	normalize bool // normalize_path
	merge     bool // merge_slashes
	slashes   escapedSlashes
}

func (n pathNorm) active() bool { return n.normalize || n.merge || n.slashes != slashesKeep }

var errBadPath = errors.New("proxy: the path cannot be normalized")

// apply normalizes an escaped path (the request target's path, without
// its query), in Envoy's order: escaped slashes, then normalize_path
// (RFC 3986: percent-encoded unreserved characters decoded, the other
// escapes in upper case, a backslash read as a slash, dot segments
// removed), then merge_slashes. It fails on a bad percent-encoding, an
// escaped slash the action refuses, and — stricter than RFC 3986, which
// stays at the root — a ".." that would climb above the root: no client
// of a mesh service has a reason to send one.
func (n pathNorm) apply(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return p, nil // "*" (OPTIONS) or not a path at all: nothing to do
	}
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '%':
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return "", errBadPath
			}
			d := unhex(p[i+1])<<4 | unhex(p[i+2])
			i += 2
			if d == '/' || d == '\\' {
				switch n.slashes {
				case slashesReject:
					return "", errBadPath
				case slashesUnescape:
					c = d
					if c == '\\' && n.normalize {
						c = '/'
					}
					b.WriteByte(c)
					continue
				}
			}
			if n.normalize && isUnreserved(d) {
				b.WriteByte(d)
				continue
			}
			if n.normalize {
				b.WriteByte('%')
				b.WriteByte(upperHex[d>>4])
				b.WriteByte(upperHex[d&0xf])
				continue
			}
			b.WriteString(p[i-2 : i+1])
		case c == '\\' && n.normalize:
			b.WriteByte('/')
		default:
			b.WriteByte(c)
		}
	}
	out := b.String()
	if n.normalize {
		var ok bool
		if out, ok = removeDotSegments(out); !ok {
			return "", errBadPath
		}
	}
	if n.merge {
		out = mergeSlashes(out)
	}
	return out, nil
}

// removeDotSegments is RFC 3986 section 5.2.4 for an absolute path, but
// for a ".." at the root, which fails (ok false).
func removeDotSegments(p string) (string, bool) {
	if !strings.Contains(p, "/.") {
		return p, true
	}
	segs := strings.Split(p[1:], "/")
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
		case "..":
			if len(out) == 0 {
				return "", false
			}
			out = out[:len(out)-1]
		default:
			out = append(out, s)
			continue
		}
		if last {
			out = append(out, "") // "/a/." and "/a/b/.." end in a slash
		}
	}
	return "/" + strings.Join(out, "/"), true
}

func mergeSlashes(p string) string {
	if !strings.Contains(p, "//") {
		return p
	}
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		if p[i] == '/' && i > 0 && p[i-1] == '/' {
			continue
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

// normalizeRequest applies n to r's path in place (r.URL and
// r.RequestURI), leaving the query as it came.
func (n pathNorm) normalizeRequest(r *http.Request) error {
	if !n.active() {
		return nil
	}
	// The target as sent when it is a path (origin form, HTTP/2's :path):
	// url.URL would re-escape what it holds, turning a raw backslash into
	// a %5C.
	raw := r.RequestURI
	if !strings.HasPrefix(raw, "/") {
		raw = r.URL.EscapedPath()
	} else if i := strings.IndexByte(raw, '?'); i >= 0 {
		raw = raw[:i]
	}
	norm, err := n.apply(raw)
	if err != nil {
		return err
	}
	if norm == r.URL.EscapedPath() {
		return nil
	}
	p, err := url.PathUnescape(norm)
	if err != nil {
		return errBadPath
	}
	r.URL.Path, r.URL.RawPath = p, norm
	if (&url.URL{Path: p}).EscapedPath() == norm {
		r.URL.RawPath = ""
	}
	if strings.HasPrefix(r.RequestURI, "/") {
		r.RequestURI = r.URL.RequestURI()
	}
	return nil
}

const upperHex = "0123456789ABCDEF"

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// isUnreserved is RFC 3986's unreserved set: ALPHA DIGIT - . _ ~
func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}
