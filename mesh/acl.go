package mesh

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/mesh/membership"
)

// aclResolver resolves the tokens of HTTP requests (and DNS's default
// token): on a server from its own ACL state, on a client by asking a
// server, with a cache that holds while the replica's ACL epoch (moved by
// every ACL change the servers stream) and its snapshot count stay the
// same, so a deleted token stops working as soon as the change reaches
// this client.
type aclResolver struct {
	member       *membership.Membership
	store        *discovery.Store
	local        *acl.Resolver
	def          acl.DefaultPolicy
	defaultToken func() string // the token of requests that carry none
	// initialManagement is acl.tokens.initial_management on a server:
	// a request that carries it before the leader has written it waits
	// for that write (bootstrapWait) instead of being refused.
	initialManagement string

	mu    sync.Mutex
	cache map[string]cachedToken
}

type cachedToken struct {
	tok       *acl.Token
	authz     *acl.Authorizer
	epoch     uint64
	snapshots uint64
}

// maxCachedTokens bounds the client's cache; it is emptied when full.
const maxCachedTokens = 4096

func newACLResolver(m *membership.Membership, store *discovery.Store, dc string, def acl.DefaultPolicy, defaultToken func() string) (*aclResolver, error) {
	local, err := acl.NewResolver(acl.ResolverConfig{Store: store, Datacenter: dc, DefaultPolicy: def})
	if err != nil {
		return nil, err
	}
	return &aclResolver{member: m, store: store, local: local, def: def, defaultToken: defaultToken, cache: map[string]cachedToken{}}, nil
}

func (r *aclResolver) Resolve(ctx context.Context, secret string) (*acl.Token, *acl.Authorizer, error) {
	if secret == "" {
		secret = r.defaultToken()
	}
	c := r.member.Client()
	if c == nil {
		tok, authz, err := r.local.Resolve(secret)
		if errors.Is(err, acl.ErrNotFound) && r.awaitInitialManagement(ctx) {
			tok, authz, err = r.local.Resolve(secret)
		}
		if errors.Is(err, acl.ErrNotFound) {
			if done, berr := r.store.ACLBootstrapIndex(); berr == nil && done == 0 {
				// Consul's words: no token exists before the bootstrap.
				err = fmt.Errorf("ACL system must be bootstrapped before making any requests that require authorization: %w", err)
			}
		}
		return tok, authz, err
	}
	epoch, snaps := r.store.ACLEpoch(), c.Replica().Snapshots()
	r.mu.Lock()
	hit, ok := r.cache[secret]
	r.mu.Unlock()
	if ok && hit.epoch == epoch && hit.snapshots == snaps && !hit.tok.Expired(time.Now()) {
		return hit.tok, hit.authz, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	tok, rules, err := c.ResolveToken(ctx, secret)
	if err != nil {
		if errors.Is(err, acl.ErrNotFound) {
			return nil, nil, acl.ErrNotFound
		}
		return nil, nil, err
	}
	authz := acl.NewAuthorizer(tok.AccessorID, r.def, rules)
	r.mu.Lock()
	if len(r.cache) >= maxCachedTokens {
		clear(r.cache)
	}
	r.cache[secret] = cachedToken{tok: tok, authz: authz, epoch: epoch, snapshots: snaps}
	r.mu.Unlock()
	return tok, authz, nil
}

// bootstrapWait bounds how long a request with the initial management
// token waits for the leader to write it (just after the cluster's first
// election, the API already answers).
const bootstrapWait = 5 * time.Second

// awaitInitialManagement waits, for a secret not found while an initial
// management token is configured and ACLs are not bootstrapped yet, until
// they are; it says whether they are. Every secret waits, not only the
// initial management one: the leader writes that token a moment after
// its election, when the API (and the CA roots) already answer, and a
// token checked in between must be judged against the bootstrapped ACL
// system, as Consul's servers, which bootstrap ACLs before anything else
// on leadership, judge it. Without an initial management token it
// returns at once.
func (r *aclResolver) awaitInitialManagement(ctx context.Context) bool {
	if r.initialManagement == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, bootstrapWait)
	defer cancel()
	for {
		if done, err := r.store.ACLBootstrapIndex(); err == nil && done > 0 {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond): // a poll: the bootstrap index has no watch
		}
	}
}

// bootstrapInitialManagement creates acl.tokens.initial_management's
// token on the leader when the ACL system has not been bootstrapped, as
// Consul's servers do.
func (a *Agent) bootstrapInitialManagement(ctx context.Context) error {
	secret := a.cfg.ACL.Tokens.InitialManagement
	for {
		if srv := a.member.Server(); srv != nil && srv.IsLeader() {
			done, err := a.store.ACLBootstrapIndex()
			if err == nil && done > 0 {
				return nil
			}
			accessor, err := acl.NewID()
			if err != nil {
				return err
			}
			tok := acl.Token{AccessorID: accessor, SecretID: secret, Description: "Initial Management Token",
				Policies: []acl.Link{{ID: acl.ManagementPolicyID, Name: acl.ManagementPolicyName}}, CreateTime: time.Now().UTC()}
			if _, err := srv.Apply(ctx, discovery.ACLBootstrapRequest{Token: tok}); err == nil || errors.Is(err, discovery.ErrACLBootstrapped) {
				a.logger.Info("ACLs bootstrapped with the initial management token")
				return nil
			} else {
				a.logger.Warn("bootstrapping ACLs with the initial management token", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond): // leadership has no watch here; cheap to ask
		}
	}
}

// aclBootstrapResetFile is where an operator writes the reset index of an
// ACL bootstrap (Consul's acl-bootstrap-reset), on the leader.
const aclBootstrapResetFile = "acl-bootstrap-reset"

// aclBootstrapReset reads the reset index from the data dir: 0 when the
// file is absent. The file proves root on a server, which the index in a
// 403 does not; it is removed once the reset is done (a new bootstrap
// has a new index anyway).
func (a *Agent) aclBootstrapReset() (uint64, error) {
	b, err := os.ReadFile(filepath.Join(a.cfg.DataDir, aclBootstrapResetFile))
	if errors.Is(err, os.ErrNotExist) || a.member.Server() == nil {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	idx, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a reset index (a number)", filepath.Join(a.cfg.DataDir, aclBootstrapResetFile), strings.TrimSpace(string(b)))
	}
	return idx, nil
}
