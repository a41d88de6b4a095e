package envoyfmt

import (
	"strings"
	"testing"
)

func TestOperatorEnd(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int
	}{
		{"DURATION% ms", 8},
		{"REQ(X-REQUEST-ID)%", 17},
		{"REQ(USER-AGENT):10% rest", 18},
		{"START_TIME(%Y-%m-%dT%H:%M:%S)%", 29}, // the argument holds %
		{"DURATION", -1},
		{"REQ(X", -1},
	} {
		if got := OperatorEnd(c.in); got != c.want {
			t.Errorf("OperatorEnd(%q) = %d; want %d", c.in, got, c.want)
		}
	}
}

func TestCheck(t *testing.T) {
	for _, ok := range []string{
		"",
		"plain text",
		"100%% sure",
		"[%START_TIME%] %REQ(:METHOD)% %RESPONSE_CODE% %RESPONSE_FLAGS% %DURATION%",
		"%START_TIME(%Y-%m-%dT%H:%M:%S%z)% %REQ(X-REQUEST-ID):36% %DOWNSTREAM_PEER_URI_SAN%",
	} {
		if err := Check(ok); err != nil {
			t.Errorf("Check(%q) = %v; want nil", ok, err)
		}
	}
	for bad, want := range map[string]string{
		"%DURATION":            "unclosed",
		"%NOT_AN_OPERATOR%":    "unknown command operator",
		"%DURATION(x)%":        "takes no argument",
		"%REQ()%":              "missing the header name",
		"%REQ(X-ID):ten%":      "only :N",
		"%REQ(X-ID)junk%":      "only :N",
		"ok %RESPONSE_CODE% %": "unclosed",
	} {
		err := Check(bad)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check(%q) = %v; want an error containing %q", bad, err, want)
		}
	}
}
