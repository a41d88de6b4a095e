package mesh

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// apiClient talks to the local agent's HTTP API.
type apiClient struct {
	base string
	http *http.Client
}

// clientFlags adds --http-addr (default $VMESH_HTTP_ADDR, then
// 127.0.0.1:8500) to fs.
func clientFlags(fs *flag.FlagSet) *string {
	def := os.Getenv("VMESH_HTTP_ADDR")
	if def == "" {
		def = "127.0.0.1:8500"
	}
	return fs.String("http-addr", def, "the agent's HTTP API `address` (env VMESH_HTTP_ADDR)")
}

func newAPIClient(addr string) *apiClient {
	base := addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return &apiClient{base: strings.TrimRight(base, "/"), http: &http.Client{Timeout: 30 * time.Second}}
}

// do sends a request and decodes a JSON answer into out (if non-nil). A
// status other than 200 is an error carrying the agent's message.
func (c *apiClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the agent at %s (set --http-addr or VMESH_HTTP_ADDR): %w", c.base, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("agent answered %s: %s", resp.Status, strings.TrimSpace(string(data)))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decoding the agent's answer: %w", err)
		}
	}
	return nil
}

func runServices(ctx context.Context, env *cliEnv, args []string) int {
	sub := ""
	if len(args) > 0 {
		sub, args = args[0], args[1:]
	}
	fs := newFlagSet("services "+sub, env)
	addr := clientFlags(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return exitUsage
	}
	c := newAPIClient(*addr)
	switch sub {
	case "register":
		if len(pos) != 1 {
			fmt.Fprintln(env.stderr, "usage: vmesh services register FILE")
			return exitUsage
		}
		var sf servicesFile
		if err := decodeConfigFile(pos[0], &sf); err != nil {
			fmt.Fprintf(env.stderr, "vmesh services register: %v\n", err)
			return exitUsage
		}
		defs := collectServices(pos[0], sf.Service, sf.Services)
		if len(defs) == 0 {
			fmt.Fprintf(env.stderr, "vmesh services register: %s defines no service\n", pos[0])
			return exitUsage
		}
		// Validate all before registering any, so a bad file registers nothing.
		if _, err := buildFileServices("local", defs); err != nil {
			fmt.Fprintf(env.stderr, "vmesh services register: %v\n", err)
			return exitUsage
		}
		for _, d := range defs {
			if err := c.do(ctx, http.MethodPut, "/v1/agent/service/register", d.Def.registration(), nil); err != nil {
				fmt.Fprintf(env.stderr, "vmesh services register: %s: %v\n", d.Def.Name, err)
				return exitFailed
			}
			id := d.Def.ID
			if id == "" {
				id = d.Def.Name
			}
			fmt.Fprintf(env.stdout, "Registered service: %s\n", id)
		}
		return exitOK
	case "deregister":
		if len(pos) != 1 {
			fmt.Fprintln(env.stderr, "usage: vmesh services deregister ID")
			return exitUsage
		}
		if err := c.do(ctx, http.MethodPut, "/v1/agent/service/deregister/"+pos[0], nil, nil); err != nil {
			fmt.Fprintf(env.stderr, "vmesh services deregister: %v\n", err)
			return exitFailed
		}
		fmt.Fprintf(env.stdout, "Deregistered service: %s\n", pos[0])
		return exitOK
	case "list":
		var svcs map[string]struct {
			ID, Service, Address string
			Port                 int
			Tags                 []string
		}
		if err := c.do(ctx, http.MethodGet, "/v1/agent/services", nil, &svcs); err != nil {
			fmt.Fprintf(env.stderr, "vmesh services list: %v\n", err)
			return exitFailed
		}
		ids := make([]string, 0, len(svcs))
		for id := range svcs {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tService\tAddress\tPort\tTags")
		for _, id := range ids {
			s := svcs[id]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", s.ID, s.Service, s.Address, s.Port, strings.Join(s.Tags, ","))
		}
		tw.Flush()
		return exitOK
	}
	fmt.Fprintln(env.stderr, "usage: vmesh services register FILE | deregister ID | list [--http-addr ADDR]")
	return exitUsage
}
