package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
	"github.com/vmesh/vmesh/mesh"
	"github.com/vmesh/vmesh/mesh/config"
)

// startAgent starts an in-process single-node agent and waits until it
// leads and has registered its own node, as a client would see it.
func startAgent(b *testing.B, client *http.Client) *mesh.Agent {
	b.Helper()
	cfg := config.DefaultConfig()
	cfg.NodeName = benchNode
	cfg.DataDir = b.TempDir()
	cfg.Bootstrap = true
	cfg.BindAddr = "127.0.0.1"
	cfg.ClientAddr = "127.0.0.1"
	cfg.Addresses.HTTP = "127.0.0.1:0"
	cfg.Ports.Cluster = 0
	cfg.ServicesDir = ""
	cfg.LogLevel = "error"
	if err := cfg.Validate(); err != nil {
		b.Fatalf("agent config: %v", err)
	}
	a := mesh.NewAgent(cfg, testkit.Logger(b, slog.LevelError), io.Discard)
	if err := a.Start(context.Background()); err != nil {
		b.Fatalf("starting agent: %v", err)
	}
	base := "http://" + a.HTTPAddr()
	ready := func() bool {
		var leader string
		var nodes []struct{ Node string }
		return getJSON(client, base+"/v1/status/leader", &leader) == nil && leader != "" &&
			getJSON(client, base+"/v1/catalog/nodes", &nodes) == nil &&
			slices.ContainsFunc(nodes, func(n struct{ Node string }) bool { return n.Node == benchNode })
	}
	if !testkit.Eventually(30*time.Second, ready) {
		a.Close()
		b.Fatalf("agent at %s: no leader or node %s registered after 30s", base, benchNode)
	}
	return a
}

func getJSON(client *http.Client, url string, out any) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// BenchmarkHTTPRegister measures PUT /v1/agent/service/register end to end:
// HTTP on loopback, strict JSON decoding, validation, then the same raft
// Apply that BenchmarkRaftApply measures.
func BenchmarkHTTPRegister(b *testing.B) {
	for _, writers := range writerCounts {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			// Enough idle connections that 64 writers keep theirs alive
			// instead of dialing per request.
			tr := &http.Transport{MaxIdleConns: 128, MaxIdleConnsPerHost: 128}
			client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
			a := startAgent(b, client)
			defer func() {
				// Hang up first: a pooled connection that never carried a
				// request holds the agent's graceful shutdown for 5s.
				tr.CloseIdleConnections()
				if err := a.Close(); err != nil {
					b.Errorf("closing agent: %v", err)
				}
			}()
			url := "http://" + a.HTTPAddr() + "/v1/agent/service/register"
			lat := runWriters(b, writers, func(i int) error {
				body := fmt.Appendf(nil, `{"ID":"svc-%d","Name":"svc","Port":8080,"Tags":["a"]}`, i)
				req, err := http.NewRequest(http.MethodPut, url, bytes.NewReader(body))
				if err != nil {
					return err
				}
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					return err
				}
				msg, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					return fmt.Errorf("reading response: %w", err)
				}
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("PUT %s: %s: %s", url, resp.Status, bytes.TrimSpace(msg))
				}
				return nil
			})
			reportLatency(b, lat, "regs/s")
		})
	}
}
