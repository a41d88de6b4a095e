package mesh

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/vmesh/vmesh/discovery"
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
}

// readConfigEntryFile decodes and validates a config entry file and returns
// the body PUT /v1/config takes.
func readConfigEntryFile(path string) (*discovery.ConfigEntry, []byte, error) {
	var f configEntryFile
	if err := decodeConfigFile(path, &f); err != nil {
		return nil, nil, err
	}
	body, err := json.Marshal(&f)
	if err != nil {
		return nil, nil, err
	}
	e, err := discovery.DecodeConfigEntry(body)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), discovery.ErrInvalid.Error()+": ")
		return nil, nil, fmt.Errorf("%s: %s", path, strings.ReplaceAll(msg, "\n", "; "))
	}
	return e, body, nil
}

const configUsage = `usage: vmesh config write [--cas INDEX] FILE
       vmesh config read KIND NAME
       vmesh config list KIND
       vmesh config delete [--cas INDEX] KIND NAME
(flags, --http-addr too, go before the arguments)
KIND is service-defaults, service-router, service-splitter or service-resolver.`

func runConfig(ctx context.Context, env *cliEnv, args []string) int {
	sub := ""
	if len(args) > 0 {
		sub, args = args[0], args[1:]
	}
	fs := newFlagSet("config "+sub, env)
	addr := clientFlags(fs)
	cas := fs.Int64("cas", -1, "write or delete only if the entry's ModifyIndex is `INDEX` (0: only if it does not exist)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	c := newAPIClient(*addr)
	casQuery := ""
	if *cas >= 0 {
		casQuery = fmt.Sprintf("?cas=%d", *cas)
	}
	entryPath := func() string {
		return "/v1/config/" + url.PathEscape(fs.Arg(0)) + "/" + url.PathEscape(fs.Arg(1))
	}
	switch {
	case sub == "write" && fs.NArg() == 1:
		e, body, err := readConfigEntryFile(fs.Arg(0))
		if err != nil {
			fmt.Fprintf(env.stderr, "vmesh config write: %v\n", err)
			return exitUsage
		}
		var ok bool
		if err := c.do(ctx, http.MethodPut, "/v1/config"+casQuery, json.RawMessage(body), &ok); err != nil {
			fmt.Fprintf(env.stderr, "vmesh config write: %v\n", err)
			return exitFailed
		}
		if !ok {
			fmt.Fprintf(env.stderr, "vmesh config write: %s/%s changed since index %d; not written\n", e.Kind, e.Name, *cas)
			return exitFailed
		}
		fmt.Fprintf(env.stdout, "Config entry written: %s/%s\n", e.Kind, e.Name)
		return exitOK
	case sub == "read" && fs.NArg() == 2:
		var out json.RawMessage
		if err := c.do(ctx, http.MethodGet, entryPath(), nil, &out); err != nil {
			fmt.Fprintf(env.stderr, "vmesh config read: %v\n", err)
			return exitFailed
		}
		var buf strings.Builder
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		var v any
		json.Unmarshal(out, &v)
		enc.Encode(v)
		fmt.Fprint(env.stdout, buf.String())
		return exitOK
	case sub == "list" && fs.NArg() == 1:
		var out []struct{ Name string }
		if err := c.do(ctx, http.MethodGet, "/v1/config/"+url.PathEscape(fs.Arg(0)), nil, &out); err != nil {
			fmt.Fprintf(env.stderr, "vmesh config list: %v\n", err)
			return exitFailed
		}
		for _, e := range out {
			fmt.Fprintln(env.stdout, e.Name)
		}
		return exitOK
	case sub == "delete" && fs.NArg() == 2:
		var ok bool
		if err := c.do(ctx, http.MethodDelete, entryPath()+casQuery, nil, &ok); err != nil {
			fmt.Fprintf(env.stderr, "vmesh config delete: %v\n", err)
			return exitFailed
		}
		if !ok {
			fmt.Fprintf(env.stderr, "vmesh config delete: %s/%s changed since index %d; not deleted\n", fs.Arg(0), fs.Arg(1), *cas)
			return exitFailed
		}
		fmt.Fprintf(env.stdout, "Config entry deleted: %s/%s\n", fs.Arg(0), fs.Arg(1))
		return exitOK
	}
	fmt.Fprintln(env.stderr, configUsage)
	return exitUsage
}
