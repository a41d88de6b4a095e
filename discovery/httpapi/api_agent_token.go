package httpapi

import (
	"context"
	"fmt"
	"net/http"

	"github.com/vmesh/vmesh/acl"
)

// AgentTokens sets the agent's ACL tokens at run time; the agent's token
// store is one.
type AgentTokens interface {
	// SetToken makes secret the agent's token of kind (one of
	// AgentTokenKinds' values), persisting it when the agent is
	// configured to; it never logs the secret.
	SetToken(ctx context.Context, kind, secret string) error
}

// AgentTokenKinds maps each path name Consul accepts under
// /v1/agent/token/ to the kind it sets: its current names and the ones
// consul/api falls back to for older agents.
var AgentTokenKinds = map[string]string{
	"default":                          "default",
	"agent":                            "agent",
	"agent_recovery":                   "agent_recovery",
	"replication":                      "replication",
	"config_file_service_registration": "config_file_service_registration",
	"dns":                              "dns",
	// Older names.
	"agent_master":           "agent_recovery",
	"acl_token":              "default",
	"acl_agent_token":        "agent",
	"acl_agent_master_token": "agent_recovery",
	"acl_replication_token":  "replication",
}

// agentToken serves PUT /v1/agent/token/{kind}: it sets one of the
// agent's tokens, as Consul's does. It needs acl:write, as in Consul: a
// token set here is used for the agent's own writes or for every request
// that carries none. An unknown kind is Consul's 404.
func (a *API) agentToken(w http.ResponseWriter, r *http.Request) {
	if _, ok := a.allow(w, r, func(z *acl.Authorizer) error { return z.ACLWrite() }); !ok {
		return
	}
	kind, known := AgentTokenKinds[r.PathValue("kind")]
	if !known {
		a.writeError(w, r, notFound("Token %q is unknown", r.PathValue("kind")))
		return
	}
	var body struct{ Token string }
	if err := decodeBody(w, r, &body); err != nil {
		a.writeError(w, r, err)
		return
	}
	if a.Tokens == nil {
		a.writeError(w, r, &HTTPError{Code: http.StatusNotImplemented, Msg: "setting tokens is not available on this agent"})
		return
	}
	if err := a.Tokens.SetToken(r.Context(), kind, body.Token); err != nil {
		a.writeError(w, r, fmt.Errorf("setting the %s token: %w", kind, err))
		return
	}
	if a.Logger != nil {
		a.Logger.Info("updated the agent's ACL token", "kind", kind) // never the secret
	}
	w.WriteHeader(http.StatusOK)
}
