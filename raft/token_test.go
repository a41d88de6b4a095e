package raft

import (
	"errors"
	"strings"
	"testing"
)

func TestParseTokenRoundTrip(t *testing.T) {
	fp := strings.Repeat("ab", 32)
	for _, tok := range []Token{
		{ID: "0123456789abcdef", Secret: "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlYw", Fingerprint: fp},
		{ID: "x", Secret: "y", Fingerprint: strings.Repeat("0", 64)},
		// CreateToken's secrets are base64url: '-' and '_' must survive.
		{ID: "id", Secret: "a-b_c", Fingerprint: fp},
	} {
		s := tok.String()
		if !strings.HasPrefix(s, "vmesh1.") {
			t.Errorf("%+v.String() = %q; want the vmesh1. prefix", tok, s)
		}
		got, err := ParseToken(s)
		if err != nil {
			t.Errorf("ParseToken(%q): %v", s, err)
			continue
		}
		if got != tok {
			t.Errorf("ParseToken(%q) = %+v; want %+v", s, got, tok)
		}
		// Surrounding white space, as pasted from a terminal, is fine.
		if got, err := ParseToken(" \t" + s + "\n"); err != nil || got != tok {
			t.Errorf("ParseToken(%q with white space) = %+v, %v; want %+v", s, got, err, tok)
		}
	}
}

func TestParseTokenRejects(t *testing.T) {
	fp := strings.Repeat("ab", 32)
	for _, tc := range []struct{ name, in string }{
		{"empty", ""},
		{"garbage", "hello"},
		{"wrong prefix", "vmesh2.id.secret." + fp},
		{"no prefix", "id.secret." + fp + ".x"},
		{"prefix in another case", "VMESH1.id.secret." + fp},
		{"three parts", "vmesh1.id." + fp},
		{"five parts", "vmesh1.id.secret.extra." + fp},
		{"empty id", "vmesh1..secret." + fp},
		{"empty secret", "vmesh1.id.." + fp},
		{"empty fingerprint", "vmesh1.id.secret."},
		{"short fingerprint", "vmesh1.id.secret." + fp[:62]},
		{"long fingerprint", "vmesh1.id.secret." + fp + "ab"},
		{"fingerprint not hex", "vmesh1.id.secret." + strings.Repeat("zz", 32)},
		{"fingerprint with one non-hex char", "vmesh1.id.secret." + fp[:63] + "g"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := ParseToken(tc.in)
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("ParseToken(%q) = %+v, %v; want ErrInvalidToken", tc.in, tok, err)
			}
			if tok != (Token{}) {
				t.Errorf("ParseToken(%q) returned %+v with its error; want the zero Token", tc.in, tok)
			}
		})
	}
}
