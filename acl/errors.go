package acl

import (
	"errors"
	"strings"
)

// The errors callers answer with 403 and the error's text as the body,
// exactly as Consul does. Their text is Consul's, without the package
// prefix other vmesh errors carry, because clients match on it
// (consul/api's IsErrPermissionDenied looks for "Permission denied").
var (
	// ErrNotFound: the secret names no token, or an expired one.
	ErrNotFound = errors.New("ACL not found")
	// ErrPermissionDenied matches every *PermissionDeniedError with
	// errors.Is.
	ErrPermissionDenied = errors.New("Permission denied")
)

// PermissionDeniedError says which token lacked which permission on what,
// in Consul's words:
//
//	Permission denied: token with AccessorID '<id>' lacks permission 'service:write' on "api"
//	Permission denied: anonymous token lacks permission 'acl:read'. The anonymous token is used implicitly when a request does not specify a token.
type PermissionDeniedError struct {
	AccessorID string
	Resource   Resource
	Access     Access
	Name       string // the resource's name; "" for acl, operator, ...
}

func (e *PermissionDeniedError) Error() string {
	var b strings.Builder
	b.WriteString("Permission denied: ")
	switch e.AccessorID {
	case "":
		b.WriteString("provided token")
	case AnonymousAccessorID:
		b.WriteString("anonymous token")
	default:
		b.WriteString("token with AccessorID '" + e.AccessorID + "'")
	}
	b.WriteString(" lacks permission '" + string(e.Resource) + ":" + e.Access.String() + "'")
	if e.Name != "" {
		b.WriteString(` on "` + e.Name + `"`)
	}
	if e.AccessorID == AnonymousAccessorID {
		b.WriteString(". The anonymous token is used implicitly when a request does not specify a token.")
	}
	return b.String()
}

// Is makes errors.Is(err, ErrPermissionDenied) hold.
func (e *PermissionDeniedError) Is(target error) bool { return target == ErrPermissionDenied }
