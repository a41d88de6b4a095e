package envoyfmt

import (
	"fmt"
	"slices"
	"strings"
)

// Operators are the Envoy command operators vmesh's proxy writes. Those
// ending in "(" take an argument (a header name, or START_TIME's
// strftime format).
var Operators = []string{
	"START_TIME", "START_TIME(", "PROTOCOL", "RESPONSE_CODE", "RESPONSE_CODE_DETAILS", "RESPONSE_FLAGS",
	"RESPONSE_FLAGS_LONG", "CONNECTION_TERMINATION_DETAILS", "BYTES_RECEIVED", "BYTES_SENT", "DURATION",
	"REQUEST_DURATION", "RESPONSE_DURATION", "UPSTREAM_HOST", "UPSTREAM_CLUSTER", "UPSTREAM_LOCAL_ADDRESS",
	"UPSTREAM_TRANSPORT_FAILURE_REASON", "DOWNSTREAM_LOCAL_ADDRESS", "DOWNSTREAM_REMOTE_ADDRESS",
	"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", "DOWNSTREAM_PEER_URI_SAN", "DOWNSTREAM_LOCAL_URI_SAN",
	"REQUESTED_SERVER_NAME", "ROUTE_NAME", "TRACE_ID", "HOSTNAME", "REQ(", "RESP(", "TRAILER(",
}

// OperatorEnd is the index of the % that closes the operator s starts
// with (after its opening %), -1 if none: the next % for an operator
// without argument, else the first ")%" or ")":N"%" after the "(", so an
// argument may hold % (START_TIME's format).
func OperatorEnd(s string) int {
	i := 0
	for i < len(s) && (s[i] == '_' || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9')) {
		i++
	}
	if i >= len(s) || s[i] != '(' {
		return strings.IndexByte(s, '%')
	}
	for j := i; j < len(s); j++ {
		if s[j] != ')' {
			continue
		}
		k := j + 1
		if k < len(s) && s[k] == ':' {
			k++
			for k < len(s) && s[k] >= '0' && s[k] <= '9' {
				k++
			}
		}
		if k < len(s) && s[k] == '%' {
			return k
		}
	}
	return strings.IndexByte(s, '%')
}

// Check checks the syntax of an Envoy format string: every % starts an
// operator from Operators closed by another % (%% is a literal %), and
// an operator with an argument has it in parentheses, optionally
// followed by :N (a maximum length).
func Check(s string) error {
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			continue
		}
		j := OperatorEnd(s[i+1:])
		if j < 0 {
			return fmt.Errorf("unclosed command operator at byte %d: %q", i, s[i:])
		}
		op := s[i+1 : i+1+j]
		i += j + 1
		if op == "" {
			continue // %%
		}
		name, arg, hasArg := strings.Cut(op, "(")
		if !hasArg {
			if !slices.Contains(Operators, name) {
				return fmt.Errorf("unknown command operator %%%s%%", op)
			}
			continue
		}
		if !slices.Contains(Operators, name+"(") {
			return fmt.Errorf("command operator %%%s%% takes no argument or is unknown", op)
		}
		end := strings.LastIndexByte(arg, ')')
		if end < 0 {
			return fmt.Errorf("command operator %%%s%%: missing )", op)
		}
		if name != "START_TIME" && strings.TrimSpace(arg[:end]) == "" {
			return fmt.Errorf("command operator %%%s%%: missing the header name", op)
		}
		if rest := arg[end+1:]; rest != "" {
			n, ok := strings.CutPrefix(rest, ":")
			if !ok || n == "" || strings.Trim(n, "0123456789") != "" {
				return fmt.Errorf("command operator %%%s%%: after ) only :N (a maximum length) may follow", op)
			}
		}
	}
	return nil
}
