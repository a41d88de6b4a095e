package proxy

import (
	"crypto/x509"
	"fmt"
	"strings"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// Peer identities: a TLS context may name the identities its peer must
// hold (match_typed_subject_alt_names). On a mesh hop the xDS server names
// the SPIFFE ID of the destination service, so a host that holds a valid
// certificate of another service (a stolen address, a wrong endpoint)
// is refused: the chain alone would only say "some member of the mesh".

// sanMatcher accepts a peer certificate's URI SAN.
type sanMatcher struct {
	// desc is the matcher as text ("exact spiffe://td/svc/web"), for the
	// log of a mismatch and the TLS config's identity (build.go tlsKey).
	desc  string
	match func(string) bool
}

// parseSANMatchers reads the identities of a certificate validation
// context. Only URI SANs are matched: mesh certificates name SPIFFE IDs,
// and a matcher of another SAN type is refused rather than ignored.
func parseSANMatchers(vc *tlsv3.CertificateValidationContext, path string) ([]sanMatcher, error) {
	if vc == nil {
		return nil, nil
	}
	if err := onlyFields(vc, path, "match_typed_subject_alt_names"); err != nil {
		return nil, err
	}
	var out []sanMatcher
	for i, m := range vc.GetMatchTypedSubjectAltNames() {
		mp := fmt.Sprintf("%s.match_typed_subject_alt_names[%d]", path, i)
		if err := onlyFields(m, mp, "san_type", "matcher"); err != nil {
			return nil, err
		}
		if m.GetSanType() != tlsv3.SubjectAltNameMatcher_URI {
			return nil, fmt.Errorf("%w: %s.san_type %s (only URI: mesh identities are SPIFFE IDs)", ErrUnsupported, mp, m.GetSanType())
		}
		if m.GetMatcher() == nil {
			return nil, fmt.Errorf("%w: %s.matcher is missing", ErrInvalid, mp)
		}
		f, err := parseStringMatcher(m.GetMatcher(), mp+".matcher")
		if err != nil {
			return nil, err
		}
		out = append(out, sanMatcher{desc: describeMatcher(m.GetMatcher()), match: f})
	}
	return out, nil
}

// describeMatcher renders a string matcher for logs: "spiffe://td/svc/web"
// for an exact match, else its kind and value.
func describeMatcher(m *matcher.StringMatcher) string {
	var s string
	switch p := m.GetMatchPattern().(type) {
	case *matcher.StringMatcher_Exact:
		s = p.Exact
	case *matcher.StringMatcher_Prefix:
		s = "prefix " + p.Prefix
	case *matcher.StringMatcher_Suffix:
		s = "suffix " + p.Suffix
	case *matcher.StringMatcher_Contains:
		s = "contains " + p.Contains
	case *matcher.StringMatcher_SafeRegex:
		s = "regex " + p.SafeRegex.GetRegex()
	}
	if m.GetIgnoreCase() {
		s += " (any case)"
	}
	return s
}

// peerMismatchError is a verified peer whose certificate names none of
// the identities expected of it.
type peerMismatchError struct {
	expected, presented []string
}

func (e *peerMismatchError) Error() string {
	presented := "no URI SAN"
	if len(e.presented) > 0 {
		presented = strings.Join(e.presented, ", ")
	}
	return fmt.Sprintf("proxy: peer identity mismatch: expected %s, presented %s", strings.Join(e.expected, " or "), presented)
}

// checkSANs accepts leaf when one of its URI SANs matches one of sans, as
// Envoy's match_typed_subject_alt_names does (none: any leaf).
func checkSANs(leaf *x509.Certificate, sans []sanMatcher) error {
	if len(sans) == 0 {
		return nil
	}
	var presented []string
	for _, u := range leaf.URIs {
		s := u.String()
		for _, m := range sans {
			if m.match(s) {
				return nil
			}
		}
		presented = append(presented, s)
	}
	e := &peerMismatchError{presented: presented}
	for _, m := range sans {
		e.expected = append(e.expected, m.desc)
	}
	return e
}

// sansKey identifies a list of matchers in a TLS config's key.
func sansKey(sans []sanMatcher) string {
	var b strings.Builder
	for _, m := range sans {
		fmt.Fprintf(&b, "%q", m.desc)
	}
	return b.String()
}
