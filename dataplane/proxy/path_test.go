package proxy

import (
	"errors"
	"net/http"
	"net/url"
	"testing"
)

// TestPathNormalize: every spelling of /admin an application would read as
// /admin becomes /admin (or is refused); escaped slashes follow the
// action; and a normalized path is stable (normalizing it again changes
// nothing).
func TestPathNormalize(t *testing.T) {
	all := pathNorm{normalize: true, merge: true, slashes: slashesReject}
	cases := []struct {
		name string
		n    pathNorm
		in   string
		want string // "" with err
		err  bool
	}{
		{"plain", all, "/admin", "/admin", false},
		{"encoded unreserved", all, "/%61dmin", "/admin", false},
		{"encoded unreserved upper", all, "/%41%44MIN", "/ADMIN", false},
		{"double slash", all, "//admin", "/admin", false},
		{"many slashes", all, "/a///b//", "/a/b/", false},
		{"dot dot", all, "/x/../admin", "/admin", false},
		{"dot", all, "/./admin", "/admin", false},
		{"encoded dots", all, "/x/%2e%2E/admin", "/admin", false},
		{"encoded dot dot above root", all, "/%2e%2e/admin", "", true},
		{"dot dot above root", all, "/../admin", "", true},
		{"escaping after descending", all, "/a/../../admin", "", true},
		{"trailing dot dot", all, "/a/b/..", "/a/", false},
		{"trailing dot", all, "/a/.", "/a/", false},
		{"dots in names stay", all, "/a..b/.c/..d", "/a..b/.c/..d", false},
		{"double slash then dot dot", all, "//../admin", "/admin", false},
		{"backslash", all, `/x\..\admin`, "/admin", false},
		{"reserved escapes kept, upper case", all, "/a%3fb%3Dc", "/a%3Fb%3Dc", false},
		{"space escape kept", all, "/a%20b", "/a%20b", false},
		{"bad escape", all, "/a%zzb", "", true},
		{"truncated escape", all, "/a%2", "", true},
		{"encoded slash refused", all, "/admin%2Fx", "", true},
		{"encoded backslash refused", all, "/admin%5cx", "", true},
		{"root", all, "/", "/", false},
		{"asterisk", all, "*", "*", false},

		{"unescape slashes", pathNorm{normalize: true, merge: true, slashes: slashesUnescape}, "/a%2F..%2Fadmin", "/admin", false},
		{"unescape backslash", pathNorm{normalize: true, slashes: slashesUnescape}, "/a%5Cb", "/a/b", false},
		{"keep slashes", pathNorm{normalize: true, slashes: slashesKeep}, "/a%2fb", "/a%2Fb", false},
		{"merge only", pathNorm{merge: true}, "//a/./%61", "/a/./%61", false},
		{"normalize only", pathNorm{normalize: true}, "//a/./%61", "//a/a", false},
		{"off", pathNorm{}, "//a/../%61", "//a/../%61", false},
	}
	for _, tc := range cases {
		got, err := tc.n.apply(tc.in)
		if tc.err {
			if !errors.Is(err, errBadPath) {
				t.Errorf("%s: %q -> %q, %v; want refused", tc.name, tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %q -> %q, %v; want %q", tc.name, tc.in, got, err, tc.want)
			continue
		}
		if again, err := tc.n.apply(got); err != nil || again != got {
			t.Errorf("%s: normalizing %q again gives %q, %v", tc.name, got, again, err)
		}
	}
}

// TestPathNormalizeRequest: the request's URL (what routes read and what
// is forwarded) takes the normalized path and keeps its query.
func TestPathNormalizeRequest(t *testing.T) {
	n := pathNorm{normalize: true, merge: true, slashes: slashesReject}
	for _, tc := range []struct{ target, path, uri string }{
		{"/%61dmin?x=%2F..", "/admin", "/admin?x=%2F.."},
		{"//admin/./b%20c", "/admin/b c", "/admin/b%20c"},
		{"/ok", "/ok", "/ok"},
	} {
		u, err := url.ParseRequestURI(tc.target)
		if err != nil {
			t.Fatal(err)
		}
		r := &http.Request{Method: "GET", URL: u, RequestURI: tc.target}
		if err := n.normalizeRequest(r); err != nil {
			t.Fatalf("%s: %v", tc.target, err)
		}
		if r.URL.Path != tc.path || r.URL.RequestURI() != tc.uri || r.RequestURI != tc.uri {
			t.Errorf("%s: path %q, URL %q, RequestURI %q; want %q, %q", tc.target, r.URL.Path, r.URL.RequestURI(), r.RequestURI, tc.path, tc.uri)
		}
	}
}
