// Package acl owns Consul's ACL model as vmesh uses it: the token, policy
// and role shapes of Consul's HTTP API, the policy rule language, the
// Authorizer that answers one question per permission, and the Resolver
// that turns a request's secret into that Authorizer.
//
// It is a leaf: it imports nothing of vmesh, holds no state but a parse
// cache, serves no HTTP and writes no raft. Data enters as rule text
// (ParseRules), as tokens, policies and roles read through the Store
// interface that the raft state implements, and as the secret a request
// carries; it leaves as an *Authorizer whose methods return nil or a
// *PermissionDeniedError, and as ErrNotFound for an unknown or expired
// secret. Callers answer both with 403 and the error's text as the body,
// which is what Consul sends.
//
// # Semantics
//
// They are Consul's. For a name, the exact rule beats prefix rules, and
// the longest prefix wins. A token's rules (its policies, its roles'
// policies, the synthetic rules of service and node identities) merge per
// resource and name, deny beating write beating list beating read;
// whatever no rule decides falls to the default policy, which never grants
// acl:read, acl:write or snapshots. A service rule without intentions
// gives intentions read (policy read or write) or deny (policy deny). mesh
// and peering fall back to the token's operator rule. KeyWritePrefix needs
// write on the prefix and no lesser rule under it. The global-management
// and builtin/global-read-only policies are fixed rules the resolver never
// reads from the store.
//
// # Secrets at rest: a choice for whoever stores tokens
//
// Consul stores each SecretID in clear in raft, its snapshots and its
// data directory, and its token read endpoint returns it (to callers with
// acl:write; others see "<hidden>"). consul/api users rely on that: `consul
// acl token read` prints the secret, and tooling that creates a token then
// reads it back expects it. Storing only HashSecret(secret) instead means a
// copied data directory or snapshot yields no usable token, as vmesh
// already does for join tokens; the price is that a secret can be shown
// only once, when it is created, which breaks those readers.
//
// Recommendation: keep the SecretID, as Consul does, for compatibility, and
// contain it: index tokens by HashSecret(secret) so a lookup never
// compares secrets directly; redact SecretID to "<hidden>" for callers
// without acl:write; never put ACL tables on the client replica stream
// (like join tokens, they stay on servers); treat raft snapshots as
// secrets (Snapshot needs acl = "write"), and keep the data directory
// private. Choose hashing instead if losing the read-back is acceptable;
// HashSecret is then the stored value and the index.
package acl
