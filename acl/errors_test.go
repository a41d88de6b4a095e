package acl

import "testing"

// TestPermissionDeniedAnonymous: a refusal of the anonymous token says so
// in Consul's words, which consul/api's own tests compare.
func TestPermissionDeniedAnonymous(t *testing.T) {
	err := &PermissionDeniedError{AccessorID: AnonymousAccessorID, Resource: ResourceACL, Access: AccessRead}
	want := "Permission denied: anonymous token lacks permission 'acl:read'. The anonymous token is used implicitly when a request does not specify a token."
	if got := err.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
