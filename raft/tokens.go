package raft

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/discovery"
)

// Join tokens: the secret a new node presents once to get its node
// certificate, stored only as a hash, counted and expiring.

// tokenPrefix marks the token format version.
const tokenPrefix = "vmesh1"

// Token is a parsed join token.
type Token struct {
	ID          string
	Secret      string
	Fingerprint string
}

func (t Token) String() string {
	return strings.Join([]string{tokenPrefix, t.ID, t.Secret, t.Fingerprint}, ".")
}

// ParseToken parses what CreateToken printed.
func ParseToken(s string) (Token, error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) != 4 || parts[0] != tokenPrefix || parts[1] == "" || parts[2] == "" || len(parts[3]) != 64 {
		return Token{}, fmt.Errorf("%w: not a vmesh join token (want %s.<id>.<secret>.<ca-fingerprint>)", ErrInvalidToken, tokenPrefix)
	}
	if _, err := hex.DecodeString(parts[3]); err != nil {
		return Token{}, fmt.Errorf("%w: bad CA fingerprint", ErrInvalidToken)
	}
	// Fingerprints compare as lowercase hex.
	return Token{ID: parts[1], Secret: parts[2], Fingerprint: strings.ToLower(parts[3])}, nil
}

// waitCA returns the catalog's CA record, waiting up to d for it: a new
// leader stores the bootstrap CA a moment after it is elected, and a
// token asked for in between should not fail.
func (s *Server) waitCA(ctx context.Context, d time.Duration) (*discovery.CARoot, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		ws := memdb.NewWatchSet()
		_, ca, err := s.store.CA(ws)
		if err != nil || ca != nil {
			return ca, err
		}
		if ws.WatchCtx(ctx) != nil {
			return nil, errNoCAInCatalog
		}
	}
}

// CreateToken stores a new join token (only its hash) that admits uses
// joins within ttl, and returns it with what was stored.
func (s *Server) CreateToken(ctx context.Context, ttl time.Duration, uses int) (string, discovery.JoinTokenInfo, error) {
	if ttl <= 0 || ttl > discovery.MaxJoinTokenTTL {
		return "", discovery.JoinTokenInfo{}, fmt.Errorf("%w: ttl: %s is not between 1s and %s", discovery.ErrInvalid, ttl, discovery.MaxJoinTokenTTL)
	}
	if uses < 1 || uses > discovery.MaxJoinTokenUses {
		return "", discovery.JoinTokenInfo{}, fmt.Errorf("%w: uses: %d is not between 1 and %d", discovery.ErrInvalid, uses, discovery.MaxJoinTokenUses)
	}
	ca, err := s.waitCA(ctx, 10*time.Second)
	if err != nil {
		return "", discovery.JoinTokenInfo{}, err
	}
	id := make([]byte, 8)
	secret := make([]byte, 32)
	rand.Read(id)
	rand.Read(secret)
	// The oldest root still trusted: every member presents it, whether
	// its certificate was signed before or after a rotation (trust.go).
	tok := Token{ID: hex.EncodeToString(id), Secret: base64.RawURLEncoding.EncodeToString(secret), Fingerprint: pinnedRoot(ca)}
	now := time.Now()
	// Round the expiry up to a whole second: a token never lives shorter
	// than asked.
	exp := now.Add(ttl + time.Second - 1).Truncate(time.Second)
	stored := discovery.JoinToken{
		ID: tok.ID, SecretHash: discovery.HashTokenSecret(tok.Secret),
		CreatedAt: now.Unix(), ExpiresAt: exp.Unix(), Uses: uses, UsesLeft: uses,
	}
	if _, err := s.Apply(ctx, discovery.TokenCreateRequest{Token: stored}); err != nil {
		return "", discovery.JoinTokenInfo{}, err
	}
	return tok.String(), discovery.JoinTokenInfoOf(&stored), nil
}

// Tokens lists the join tokens this node's catalog holds, oldest first.
func (s *Server) Tokens() ([]discovery.JoinTokenInfo, error) {
	ts, err := s.store.Tokens()
	if err != nil {
		return nil, err
	}
	out := make([]discovery.JoinTokenInfo, 0, len(ts))
	for _, t := range ts {
		out = append(out, discovery.JoinTokenInfoOf(t))
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// RevokeToken marks a join token revoked; it admits no one from then on.
// An unknown ID is discovery.ErrNotFound.
func (s *Server) RevokeToken(ctx context.Context, id string) (discovery.JoinTokenInfo, error) {
	if _, err := s.Apply(ctx, discovery.TokenRevokeRequest{ID: id, Now: time.Now().Unix()}); err != nil {
		return discovery.JoinTokenInfo{}, err
	}
	t, err := s.store.Token(id)
	if err != nil || t == nil {
		return discovery.JoinTokenInfo{}, fmt.Errorf("%w: join token %s", discovery.ErrNotFound, id)
	}
	return discovery.JoinTokenInfoOf(t), nil
}

// tokenReapAfter is how long an expired token is kept, so that a late
// joiner is told "expired" (and an operator sees it in the list) rather
// than "no such token".
const tokenReapAfter = 24 * time.Hour

// reapTokens, on the leader, deletes the tokens expired for longer than
// tokenReapAfter.
func (s *Server) reapTokens(ctx context.Context, now time.Time) {
	ts, err := s.store.Tokens()
	if err != nil {
		return
	}
	for _, t := range ts {
		if t.Expired(now.Add(-tokenReapAfter).Unix()) {
			if _, err := s.applyCmd(ctx, discovery.TokenDeleteRequest{ID: t.ID}); err != nil {
				s.logger.Warn("reaping an expired join token", "token", t.ID, "err", err)
				return
			}
		}
	}
}
