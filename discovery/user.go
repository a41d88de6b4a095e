package discovery

import (
	"fmt"
	"os/user"
	"strconv"
)

// MetaUser is the Meta key that names the Unix user an instance's app runs
// as (Instance.User); a service definition file's `user` is stored there,
// as `protocol` is stored in Meta["protocol"].
const MetaUser = "vmesh-user"

// validUserSpelling checks that u can be a Unix user name or a UID. It
// does not look the user up: Build runs wherever a registration is
// validated; LookupUser asks the host.
func validUserSpelling(u string) error {
	if u == "" || len(u) > 64 {
		return fmt.Errorf("%q is not a user name or UID", u)
	}
	for i, r := range u {
		ok := r == '_' || r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			i > 0 && r == '-' || i == len(u)-1 && r == '$'
		if !ok {
			return fmt.Errorf("%q is not a user name or UID", u)
		}
	}
	return nil
}

// LookupUser resolves a user name or a numeric UID on this host. Errors
// say which and why, without a field name (callers add it).
func LookupUser(u string) (uint32, error) {
	if n, err := strconv.ParseUint(u, 10, 32); err == nil {
		if n == 0xFFFFFFFF {
			return 0, fmt.Errorf("%q is not a user ID", u)
		}
		return uint32(n), nil
	}
	pw, err := user.Lookup(u)
	if err != nil {
		return 0, fmt.Errorf("%q is not a user on this host", u)
	}
	n, err := strconv.ParseUint(pw.Uid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("user %q has UID %q, not a number", u, pw.Uid)
	}
	return uint32(n), nil
}
