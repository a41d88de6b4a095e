package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/vmesh/vmesh/discovery"
)

// agentTokens are the ACL tokens set on this agent at run time through
// PUT /v1/agent/token/:kind (Consul's), over those of its config file.
// They are never logged. With acl.enable_token_persistence they are kept
// in the data dir (tokenFile, 0600) and read back at start, as Consul's
// acl-tokens.json; otherwise a restart returns to the config's.
type agentTokens struct {
	mu      sync.Mutex
	set     map[string]string // kind -> secret, as set through the API
	persist string            // the file, or "" when not persisted
}

// tokenFile is where persisted tokens live in the data dir.
const tokenFile = "acl-tokens.json"

// loadAgentTokens reads the persisted tokens of dataDir when persist is
// on; a missing file is no tokens.
func loadAgentTokens(dataDir string, persist bool) (*agentTokens, error) {
	t := &agentTokens{set: map[string]string{}}
	if !persist {
		return t, nil
	}
	t.persist = filepath.Join(dataDir, tokenFile)
	b, err := os.ReadFile(t.persist)
	if errors.Is(err, os.ErrNotExist) {
		return t, nil
	}
	if err != nil {
		return nil, fmt.Errorf("acl.enable_token_persistence: %w", err)
	}
	if err := json.Unmarshal(b, &t.set); err != nil {
		return nil, fmt.Errorf("acl.enable_token_persistence: %s: not a JSON object of tokens: %w", t.persist, err)
	}
	return t, nil
}

// get is the token of kind set through the API, or def (the config's).
func (t *agentTokens) get(kind, def string) string {
	if t == nil {
		return def
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if s, ok := t.set[kind]; ok {
		return s
	}
	return def
}

// SetToken is httpapi.AgentTokens': kind is one of httpapi's canonical
// kinds. The token takes effect at once; it is written to disk first when
// persisted, so an answered call survives a restart.
func (t *agentTokens) SetToken(_ context.Context, kind, secret string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	next := make(map[string]string, len(t.set)+1)
	for k, v := range t.set {
		next[k] = v
	}
	next[kind] = secret
	if t.persist != "" {
		b, err := json.Marshal(next)
		if err != nil {
			return err
		}
		tmp := t.persist + ".tmp"
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			return fmt.Errorf("persisting the agent's tokens: %w", err)
		}
		if err := os.Rename(tmp, t.persist); err != nil {
			return fmt.Errorf("persisting the agent's tokens: %w", err)
		}
	}
	t.set = next
	return nil
}

// The token kinds the agent uses (httpapi.AgentTokenKinds lists them all).
const (
	tokenAgent   = "agent"
	tokenDefault = "default"
	tokenDNS     = "dns"
)

// agentToken is the token of the agent's own writes: acl.tokens.agent,
// or the one set through the API.
func (a *Agent) agentToken() string { return a.tokens.get(tokenAgent, a.cfg.ACL.Tokens.Agent) }

// defaultToken is the token of requests that carry none.
func (a *Agent) defaultToken() string { return a.tokens.get(tokenDefault, a.cfg.ACL.Tokens.Default) }

// dnsToken is DNS's token: the one set for dns, else the default token
// (an empty secret resolves as the default token).
func (a *Agent) dnsToken() string { return a.tokens.get(tokenDNS, "") }

// tokenWriter applies commands with the token that token returns when
// it is called (none when it returns "").
type tokenWriter struct {
	w     discovery.Writer
	token func() string
}

func (t tokenWriter) Apply(ctx context.Context, cmd discovery.Command) (uint64, error) {
	if tok := t.token(); tok != "" {
		ctx = discovery.WithToken(ctx, tok)
	}
	return t.w.Apply(ctx, cmd)
}
