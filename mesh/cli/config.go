package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/mesh/config"
)

// configEntryFile is a config entry file as `consul config write` reads
// one: the fields of every supported kind, flat, keys in CamelCase or
// snake_case. Decoding checks keys and types with file:line; which fields
// belong to which kind is checked by discovery.DecodeConfigEntry, the same
// validation PUT /v1/config runs.
type configEntryFile struct {
	Kind      string            `hcl:"kind" json:"Kind"`
	Name      string            `hcl:"name" json:"Name"`
	Namespace string            `hcl:"namespace" json:",omitempty"`
	Partition string            `hcl:"partition" json:",omitempty"`
	Meta      map[string]string `hcl:"meta" json:",omitempty"`
	// service-defaults
	Protocol              string `hcl:"protocol" json:",omitempty"`
	MaxInboundConnections int    `hcl:"max_inbound_connections" json:",omitempty"`
	LocalConnectTimeoutMs int    `hcl:"local_connect_timeout_ms" json:",omitempty"`
	LocalRequestTimeoutMs int    `hcl:"local_request_timeout_ms" json:",omitempty"`
	// service-router
	Routes []discovery.ServiceRoute `hcl:"routes" json:",omitempty"`
	// service-splitter
	Splits []discovery.ServiceSplit `hcl:"splits" json:",omitempty"`
	// service-resolver
	ConnectTimeout discovery.Duration                 `hcl:"connect_timeout" json:",omitempty"`
	RequestTimeout discovery.Duration                 `hcl:"request_timeout" json:",omitempty"`
	Redirect       *discovery.ServiceResolverRedirect `hcl:"redirect" json:",omitempty"`
	LoadBalancer   *discovery.LoadBalancer            `hcl:"load_balancer" json:",omitempty"`
	// proxy-defaults
	AccessLogs *discovery.AccessLogs `hcl:"access_logs" json:",omitempty"`
	// ingress-gateway and terminating-gateway: stored for Consul's tools,
	// vmesh runs no gateways
	TLS       *discovery.GatewayTLSConfig     `hcl:"tls" json:",omitempty"`
	Listeners []discovery.IngressListener     `hcl:"listeners" json:",omitempty"`
	Defaults  *discovery.IngressServiceConfig `hcl:"defaults" json:",omitempty"`
	Services  []discovery.LinkedService       `hcl:"services" json:",omitempty"`
	// service-intentions
	Sources []*intentionSourceFile `hcl:"sources" json:",omitempty"`
}

// intentionSourceFile is one source of a service-intentions entry, with
// the fields discovery.DecodeServiceIntentions reads (it refuses those
// vmesh does not support, naming them).
type intentionSourceFile struct {
	Name          string            `hcl:"name"`
	Action        string            `hcl:"action" json:",omitempty"`
	Description   string            `hcl:"description" json:",omitempty"`
	Type          string            `hcl:"type" json:",omitempty"`
	Peer          string            `hcl:"peer" json:",omitempty"`
	Partition     string            `hcl:"partition" json:",omitempty"`
	Namespace     string            `hcl:"namespace" json:",omitempty"`
	SamenessGroup string            `hcl:"sameness_group" json:",omitempty"`
	Precedence    int               `hcl:"precedence" json:",omitempty"`
	LegacyMeta    map[string]string `hcl:"legacy_meta" json:",omitempty"`
}

// readConfigEntryFile decodes and validates a config entry file and returns
// the body PUT /v1/config takes.
func readConfigEntryFile(path string) (*discovery.ConfigEntry, []byte, error) {
	var f configEntryFile
	if err := config.DecodeFile(path, &f); err != nil {
		return nil, nil, err
	}
	body, err := json.Marshal(&f)
	if err != nil {
		return nil, nil, err
	}
	// Every problem the API would answer, on one line after the file.
	invalid := func(err error) error {
		msg := strings.TrimPrefix(err.Error(), discovery.ErrInvalid.Error()+": ")
		return fmt.Errorf("%s: %s", path, strings.ReplaceAll(msg, "\n", "; "))
	}
	if f.Kind == discovery.KindServiceIntentions {
		// The intentions to one destination: checked as PUT /v1/config
		// checks them (discovery/intentions_legacy.go).
		if _, _, err := discovery.DecodeServiceIntentions(body); err != nil {
			return nil, nil, invalid(err)
		}
		return &discovery.ConfigEntry{Kind: f.Kind, Name: f.Name}, body, nil
	}
	if f.Sources != nil {
		return nil, nil, fmt.Errorf("%s: Sources: only a service-intentions entry has sources, not %s", path, f.Kind)
	}
	e, err := discovery.DecodeConfigEntry(body)
	if err != nil {
		return nil, nil, invalid(err)
	}
	return e, body, nil
}

// configCommand is `vmesh config write | read | list | delete`: config
// entries, as `consul config` has them.
type configCommand struct {
	*Flags
	http *httpFlags
	cas  *int64
}

func newConfig(env *Env) Command {
	c := &configCommand{Flags: NewFlags(env, "config", `vmesh config write [flags] FILE
       vmesh config read [flags] KIND NAME
       vmesh config list [flags] KIND
       vmesh config delete [flags] KIND NAME`,
		`Writes, reads, lists and deletes config entries. KIND is service-defaults,
service-router, service-splitter, service-resolver, service-intentions,
proxy-defaults, or ingress-gateway or terminating-gateway (stored for
Consul's tools; vmesh runs no gateways). A file is checked
(keys, types, which fields belong to its kind) before it is sent.`)}
	c.http = c.clientFlags()
	c.cas = c.FS.Int64("cas", -1, "write or delete only if the entry's ModifyIndex is `INDEX` (0: only if it does not exist)")
	return c
}

func (c *configCommand) Synopsis() string { return "write, read, list and delete config entries" }

func (c *configCommand) Run(ctx context.Context, args []string) int {
	sub, pos, code, done := c.ParseSub(args)
	if done {
		return code
	}
	env, cas := c.env, *c.cas
	switch {
	case sub == "write" && len(pos) == 1, sub == "read" && len(pos) == 2, sub == "list" && len(pos) == 1, sub == "delete" && len(pos) == 2:
	default:
		return c.UsageError("want write FILE, read KIND NAME, list KIND or delete KIND NAME")
	}
	api, code := c.http.client()
	if api == nil {
		return code
	}
	casQuery := ""
	if cas >= 0 {
		casQuery = fmt.Sprintf("?cas=%d", cas)
	}
	entryPath := func() string {
		return "/v1/config/" + url.PathEscape(pos[0]) + "/" + url.PathEscape(pos[1])
	}
	switch {
	case sub == "write" && len(pos) == 1:
		e, body, err := readConfigEntryFile(pos[0])
		if err != nil {
			fmt.Fprintf(env.Stderr, "vmesh config write: %v\n", err)
			return ExitUsage
		}
		var ok bool
		if err := api.do(ctx, http.MethodPut, "/v1/config"+casQuery, json.RawMessage(body), &ok); err != nil {
			fmt.Fprintf(env.Stderr, "vmesh config write: %v\n", err)
			return ExitFailed
		}
		if !ok {
			fmt.Fprintf(env.Stderr, "vmesh config write: %s/%s changed since index %d; not written\n", e.Kind, e.Name, cas)
			return ExitFailed
		}
		fmt.Fprintf(env.Stdout, "Config entry written: %s/%s\n", e.Kind, e.Name)
		return ExitOK
	case sub == "read" && len(pos) == 2:
		var out json.RawMessage
		if err := api.do(ctx, http.MethodGet, entryPath(), nil, &out); err != nil {
			fmt.Fprintf(env.Stderr, "vmesh config read: %v\n", err)
			return ExitFailed
		}
		var buf strings.Builder
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		var v any
		json.Unmarshal(out, &v)
		enc.Encode(v)
		fmt.Fprint(env.Stdout, buf.String())
		return ExitOK
	case sub == "list" && len(pos) == 1:
		var out []struct{ Name string }
		if err := api.do(ctx, http.MethodGet, "/v1/config/"+url.PathEscape(pos[0]), nil, &out); err != nil {
			fmt.Fprintf(env.Stderr, "vmesh config list: %v\n", err)
			return ExitFailed
		}
		for _, e := range out {
			fmt.Fprintln(env.Stdout, e.Name)
		}
		return ExitOK
	case sub == "delete" && len(pos) == 2:
		var ok bool
		if err := api.do(ctx, http.MethodDelete, entryPath()+casQuery, nil, &ok); err != nil {
			fmt.Fprintf(env.Stderr, "vmesh config delete: %v\n", err)
			return ExitFailed
		}
		if !ok {
			fmt.Fprintf(env.Stderr, "vmesh config delete: %s/%s changed since index %d; not deleted\n", pos[0], pos[1], cas)
			return ExitFailed
		}
		fmt.Fprintf(env.Stdout, "Config entry deleted: %s/%s\n", pos[0], pos[1])
		return ExitOK
	}
	return c.UsageError("want write FILE, read KIND NAME, list KIND or delete KIND NAME")
}
