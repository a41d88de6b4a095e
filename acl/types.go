package acl

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"
)

// The built-in objects, with Consul's IDs, names and secrets so that tools
// written against Consul find them where they expect.
const (
	// ManagementPolicyID is global-management, the policy that grants
	// everything. Its rules are fixed: the resolver uses ManagementRules
	// for a link to this ID whatever the store holds.
	ManagementPolicyID   = "00000000-0000-0000-0000-000000000001"
	ManagementPolicyName = "global-management"
	// ReadOnlyPolicyID is builtin/global-read-only, fixed like
	// global-management.
	ReadOnlyPolicyID   = "00000000-0000-0000-0000-000000000002"
	ReadOnlyPolicyName = "builtin/global-read-only"

	// AnonymousAccessorID and AnonymousSecretID are the anonymous token's:
	// a request without a token is a request with AnonymousSecretID.
	AnonymousAccessorID = "00000000-0000-0000-0000-000000000002"
	AnonymousSecretID   = "anonymous"
)

// Link names a policy or a role from a token or a role. The store keeps the
// ID; Name is what the caller may give instead and what responses show.
type Link struct {
	ID   string
	Name string
}

// PolicyLink and RoleLink are Link, named as consul/api names them.
type (
	PolicyLink = Link
	RoleLink   = Link
)

// ServiceIdentity grants what an instance of ServiceName and its sidecar
// need (ServiceIdentityRules), in Datacenters or, when empty, in all.
type ServiceIdentity struct {
	ServiceName string
	Datacenters []string `json:",omitempty"`
}

// NodeIdentity grants what the agent of NodeName needs
// (NodeIdentityRules), in Datacenter only.
type NodeIdentity struct {
	NodeName   string
	Datacenter string
}

// Token is an ACL token as Consul's HTTP API serves it (consul/api
// ACLToken). Fields consul/api has and vmesh does not (Namespace,
// Partition, AuthMethod, TemplatedPolicies, the legacy Name and Rules) are
// left out; they are all omitempty there, so clients do not miss them.
type Token struct {
	CreateIndex       uint64
	ModifyIndex       uint64
	AccessorID        string
	SecretID          string
	Description       string
	Policies          []PolicyLink      `json:",omitempty"`
	Roles             []RoleLink        `json:",omitempty"`
	ServiceIdentities []ServiceIdentity `json:",omitempty"`
	NodeIdentities    []NodeIdentity    `json:",omitempty"`
	Local             bool
	// ExpirationTTL is input only: the writer turns it into
	// ExpirationTime and clears it, as Consul does. JSON accepts a number
	// of nanoseconds (consul/api) or a duration string ("1h").
	ExpirationTTL  time.Duration `json:",omitempty"`
	ExpirationTime *time.Time    `json:",omitempty"`
	CreateTime     time.Time     `json:",omitempty"`
	Hash           []byte        `json:",omitempty"`
}

// UnmarshalJSON accepts ExpirationTTL as nanoseconds or as a duration
// string, as Consul's HTTP API does.
func (t *Token) UnmarshalJSON(b []byte) error {
	type plain Token
	aux := struct {
		*plain
		ExpirationTTL json.RawMessage
	}{plain: (*plain)(t)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	t.ExpirationTTL = 0
	raw := aux.ExpirationTTL
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("ExpirationTTL: %w", err)
		}
		t.ExpirationTTL = d
		return nil
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return fmt.Errorf("ExpirationTTL: want a duration string such as \"1h\" or nanoseconds, got %s", raw)
	}
	t.ExpirationTTL = time.Duration(n)
	return nil
}

// Expired reports whether the token has expired at now. An expired token
// resolves as one that does not exist.
func (t *Token) Expired(now time.Time) bool {
	return t.ExpirationTime != nil && t.ExpirationTime.Before(now)
}

// Policy is an ACL policy as consul/api's ACLPolicy. Rules is the source
// text (HCL or JSON), kept as written so that a read returns it unchanged.
type Policy struct {
	ID          string
	Name        string
	Description string
	Rules       string
	Datacenters []string
	Hash        []byte
	CreateIndex uint64
	ModifyIndex uint64
}

// Role is a named set of policies and identities, as consul/api's ACLRole.
type Role struct {
	ID                string
	Name              string
	Description       string
	Policies          []PolicyLink      `json:",omitempty"`
	ServiceIdentities []ServiceIdentity `json:",omitempty"`
	NodeIdentities    []NodeIdentity    `json:",omitempty"`
	Hash              []byte
	CreateIndex       uint64
	ModifyIndex       uint64
}

// ManagementPolicy and ReadOnlyPolicy return the built-in policies as the
// store should hold them (it creates them once, when ACLs are set up).
func ManagementPolicy() Policy {
	return Policy{
		ID:          ManagementPolicyID,
		Name:        ManagementPolicyName,
		Description: "Builtin Policy that grants unlimited access",
		Rules:       managementRules,
	}
}

// ReadOnlyPolicy: see ManagementPolicy.
func ReadOnlyPolicy() Policy {
	return Policy{
		ID:          ReadOnlyPolicyID,
		Name:        ReadOnlyPolicyName,
		Description: "Builtin Policy that grants unlimited read-only access to all components",
		Rules:       readOnlyRules,
	}
}

// AnonymousToken returns the anonymous token as the store should hold it.
// It has no policies, so the default policy decides for it until an
// operator links some.
func AnonymousToken() Token {
	return Token{
		AccessorID:  AnonymousAccessorID,
		SecretID:    AnonymousSecretID,
		Description: "Anonymous Token",
	}
}

// NewID returns a random (version 4) UUID, the form of every accessor,
// secret, policy and role ID.
func NewID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("acl: generating an ID: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}

// HashSecret is the SHA-256 of a SecretID in hex. Secrets are random UUIDs
// (122 bits), so a fast hash suffices; see the package comment for where
// to use it.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

var (
	uuidRE     = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	identityRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9\-_]*[a-z0-9])?$`)
	policyRE   = regexp.MustCompile(`^[A-Za-z0-9\-_]+/?[A-Za-z0-9\-_]*$`)
	// roleRE has no {1,256}: a counted repetition compiles to one copy
	// per count, 260 KB of heap for the life of every vmesh process
	// (GODEBUG=inittrace=1); maxRoleName bounds the length instead.
	roleRE = regexp.MustCompile(`^[A-Za-z0-9\-_]+$`)
)

const maxIdentityName, maxPolicyName, maxRoleName = 256, 128, 256

// Validate checks what a token says about itself: ID shapes, identities,
// links and expiry. Whether linked policies and roles exist is the
// writer's question. Every problem is reported, each naming its field.
func (t *Token) Validate() error {
	var errs []error
	if t.AccessorID != "" && !uuidRE.MatchString(t.AccessorID) {
		errs = append(errs, fmt.Errorf("AccessorID %q is not a UUID", t.AccessorID))
	}
	switch {
	case t.SecretID == "":
	case t.SecretID == AnonymousSecretID:
		if t.AccessorID != AnonymousAccessorID {
			errs = append(errs, fmt.Errorf("SecretID %q is reserved for the anonymous token", AnonymousSecretID))
		}
	case !uuidRE.MatchString(t.SecretID):
		errs = append(errs, errors.New("SecretID is not a UUID")) // never echo a secret
	}
	errs = append(errs, validateLinks("Policies", t.Policies)...)
	errs = append(errs, validateLinks("Roles", t.Roles)...)
	errs = append(errs, validateIdentities(t.ServiceIdentities, t.NodeIdentities)...)
	if t.Local {
		for i, s := range t.ServiceIdentities {
			if len(s.Datacenters) > 0 {
				errs = append(errs, fmt.Errorf("ServiceIdentities[%d]: a local token's service identity cannot list datacenters", i))
			}
		}
	}
	switch {
	case t.ExpirationTTL < 0:
		errs = append(errs, fmt.Errorf("ExpirationTTL %s is negative", t.ExpirationTTL))
	case t.ExpirationTTL > 0 && t.ExpirationTime != nil:
		errs = append(errs, errors.New("ExpirationTTL and ExpirationTime cannot both be set"))
	}
	return errors.Join(errs...)
}

// Validate checks a policy's name and parses its rules.
func (p *Policy) Validate() error {
	var errs []error
	if p.ID != "" && !uuidRE.MatchString(p.ID) {
		errs = append(errs, fmt.Errorf("ID %q is not a UUID", p.ID))
	}
	if len(p.Name) > maxPolicyName || !policyRE.MatchString(p.Name) {
		errs = append(errs, fmt.Errorf("Name %q is invalid: use 1 to %d letters, digits, '-' and '_'", p.Name, maxPolicyName))
	}
	if _, err := ParseRules(p.Rules); err != nil {
		errs = append(errs, fmt.Errorf("Rules: %w", err))
	}
	return errors.Join(errs...)
}

// Validate checks a role's name, links and identities.
func (r *Role) Validate() error {
	var errs []error
	if r.ID != "" && !uuidRE.MatchString(r.ID) {
		errs = append(errs, fmt.Errorf("ID %q is not a UUID", r.ID))
	}
	if len(r.Name) > maxRoleName || !roleRE.MatchString(r.Name) {
		errs = append(errs, fmt.Errorf("Name %q is invalid: use 1 to 256 letters, digits, '-' and '_'", r.Name))
	}
	errs = append(errs, validateLinks("Policies", r.Policies)...)
	errs = append(errs, validateIdentities(r.ServiceIdentities, r.NodeIdentities)...)
	return errors.Join(errs...)
}

func validateLinks(field string, links []Link) []error {
	var errs []error
	for i, l := range links {
		if l.ID == "" && l.Name == "" {
			errs = append(errs, fmt.Errorf("%s[%d]: give an ID or a Name", field, i))
		}
	}
	return errs
}

func validateIdentities(svcs []ServiceIdentity, nodes []NodeIdentity) []error {
	var errs []error
	for i, s := range svcs {
		if !validIdentityName(s.ServiceName) {
			errs = append(errs, fmt.Errorf("ServiceIdentities[%d]: ServiceName %q is invalid: use lowercase letters, digits, '-' and '_', starting and ending with a letter or digit", i, s.ServiceName))
		}
	}
	for i, n := range nodes {
		if !validIdentityName(n.NodeName) {
			errs = append(errs, fmt.Errorf("NodeIdentities[%d]: NodeName %q is invalid: use lowercase letters, digits, '-' and '_', starting and ending with a letter or digit", i, n.NodeName))
		}
		if n.Datacenter == "" {
			errs = append(errs, fmt.Errorf("NodeIdentities[%d]: Datacenter is required", i))
		}
	}
	return errs
}

func validIdentityName(s string) bool {
	return len(s) <= maxIdentityName && identityRE.MatchString(s)
}
