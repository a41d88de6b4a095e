package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// apiClient talks to the local agent's HTTP API, the only way the CLI
// reaches an agent.
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
