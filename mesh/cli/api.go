package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// The ACL token's environment variables, in the order they are tried
// after the flags: vmesh's own names first, so that a CONSUL_HTTP_TOKEN
// left in a shell for Consul does not shadow the one set for vmesh.
const (
	TokenEnv           = "VMESH_HTTP_TOKEN"
	TokenFileEnv       = "VMESH_HTTP_TOKEN_FILE"
	ConsulTokenEnv     = "CONSUL_HTTP_TOKEN"
	ConsulTokenFileEnv = "CONSUL_HTTP_TOKEN_FILE"
)

// tokenHeader carries the ACL token on every request, as Consul's clients
// send it.
const tokenHeader = "X-Consul-Token"

// apiClient talks to the local agent's HTTP API, the only way the CLI
// reaches an agent.
type apiClient struct {
	base string
	http *http.Client
	// token is the ACL token sent with every request ("" sends none, and
	// the agent treats the request as anonymous).
	token string
	// hint is added to a 403 when no token was sent: where to give one.
	hint string
}

// httpFlags are the flags of a command that talks to an agent: where it
// listens and which ACL token to send.
type httpFlags struct {
	f                   *Flags
	addr                *string
	token, tokenFile    *string
	tokenName, fileName string // the two token flags' names
}

// clientFlags adds --http-addr (default $VMESH_HTTP_ADDR, then
// 127.0.0.1:8500) and the ACL token flags -token and -token-file.
func (f *Flags) clientFlags() *httpFlags { return f.httpFlags("token", "token-file") }

// httpFlags adds --http-addr and the ACL token flags under the given
// names: join and agent already use -token and -token-file for a join
// token.
func (f *Flags) httpFlags(tokenName, fileName string) *httpFlags {
	def := os.Getenv("VMESH_HTTP_ADDR")
	if def == "" {
		def = "127.0.0.1:8500"
	}
	return &httpFlags{
		f:         f,
		addr:      f.FS.String("http-addr", def, "the agent's HTTP API `address` (env VMESH_HTTP_ADDR)"),
		token:     f.FS.String(tokenName, "", "ACL `token` to send (visible in ps: prefer -"+fileName+" or "+TokenEnv+")"),
		tokenFile: f.FS.String(fileName, "", "`file` holding the ACL token to send (env "+TokenFileEnv+")"),
		tokenName: tokenName,
		fileName:  fileName,
	}
}

// client returns the API client with the ACL token resolved, or nil and
// the exit code after printing why not (an unreadable or empty token
// file is a usage error naming its flag or variable).
func (h *httpFlags) client() (*apiClient, int) {
	env := h.f.env
	token, warnings, err := h.resolveToken()
	for _, w := range warnings {
		fmt.Fprintf(env.Stderr, "vmesh %s: warning: %s\n", h.f.name, w)
	}
	if err != nil {
		fmt.Fprintf(env.Stderr, "vmesh %s: %v\n", h.f.name, err)
		return nil, ExitUsage
	}
	c := newAPIClient(*h.addr)
	c.token = token
	c.hint = fmt.Sprintf("no ACL token was sent: give one with -%s FILE, %s or %s", h.fileName, TokenFileEnv, TokenEnv)
	return c, ExitOK
}

// resolveToken picks the ACL token: -token, then -token-file, then
// VMESH_HTTP_TOKEN, VMESH_HTTP_TOKEN_FILE, CONSUL_HTTP_TOKEN and
// CONSUL_HTTP_TOKEN_FILE; the first one set wins and the others are not
// read. No source at all is no token.
func (h *httpFlags) resolveToken() (token string, warnings []string, err error) {
	if *h.token != "" {
		w := fmt.Sprintf("-%s puts the ACL token in argv, where ps shows it to every user of this host; prefer -%s FILE or %s", h.tokenName, h.fileName, TokenEnv)
		return strings.TrimSpace(*h.token), []string{w}, nil
	}
	if *h.tokenFile != "" {
		tok, warning, err := readTokenFile(*h.tokenFile)
		if err != nil {
			return "", nil, fmt.Errorf("-%s: %w", h.fileName, err)
		}
		return tok, nonEmpty(warning), nil
	}
	for _, src := range []struct {
		name string
		file bool
	}{{TokenEnv, false}, {TokenFileEnv, true}, {ConsulTokenEnv, false}, {ConsulTokenFileEnv, true}} {
		v := h.f.env.getenv(src.name)
		if v == "" {
			continue
		}
		if !src.file {
			return strings.TrimSpace(v), nil, nil
		}
		tok, warning, err := readTokenFile(v)
		if err != nil {
			return "", nil, fmt.Errorf("%s: %w", src.name, err)
		}
		return tok, nonEmpty(warning), nil
	}
	return "", nil, nil
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

// readTokenFile reads an ACL token from path, trimmed. warning is
// non-empty when others on the host may read the file.
func readTokenFile(path string) (token, warning string, err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", "", err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		warning = fmt.Sprintf("the ACL token file %s has mode %04o: others on this host may read the token; chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", err
	}
	if token = strings.TrimSpace(string(b)); token == "" {
		return "", "", fmt.Errorf("%s is empty", path)
	}
	return token, warning, nil
}

func newAPIClient(addr string) *apiClient {
	base := addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return &apiClient{base: strings.TrimRight(base, "/"), http: &http.Client{Timeout: 30 * time.Second}}
}

// agentError is the agent's answer to a request it refused.
type agentError struct {
	status string
	msg    string
	hint   string
}

func (e *agentError) Error() string {
	s := fmt.Sprintf("agent answered %s: %s", e.status, e.msg)
	if e.hint != "" {
		s += " (" + e.hint + ")"
	}
	return s
}

// do sends a request, with the ACL token if there is one, and decodes a
// JSON answer into out (if non-nil). A status other than 200 is an
// *agentError carrying the agent's message as it came.
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
	if c.token != "" {
		req.Header.Set(tokenHeader, c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the agent at %s (set --http-addr or VMESH_HTTP_ADDR): %w", c.base, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		e := &agentError{status: resp.Status, msg: strings.TrimSpace(string(data))}
		if resp.StatusCode == http.StatusForbidden && c.token == "" {
			e.hint = c.hint
		}
		return e
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decoding the agent's answer: %w", err)
		}
	}
	return nil
}
