package mesh

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/vmesh/vmesh/lab/testkit"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmesh/vmesh/mesh/config"
)

// testConfig is a single-node bootstrap config on loopback with an
// ephemeral HTTP port and a data dir that the test owns.
func testConfig(t testing.TB) config.Config {
	cfg := config.DefaultConfig()
	cfg.NodeName = "node-a"
	cfg.DataDir = t.TempDir()
	cfg.Bootstrap = true
	cfg.BindAddr = "127.0.0.1"
	cfg.ClientAddr = "127.0.0.1"
	cfg.Addresses.HTTP = "127.0.0.1:0"
	// An ephemeral DNS port (UDP and TCP); Agent.DNSAddr tells which.
	cfg.Addresses.DNS = "127.0.0.1:0"
	cfg.Ports.Cluster = 0 // an ephemeral cluster port: tests run side by side
	cfg.ServicesDir = ""
	cfg.LogLevel = "warn"
	// In-process test agents share 127.0.0.1: only a test that needs the
	// proxy turns it on (its listeners would collide otherwise).
	cfg.Proxy.Enabled = false
	return cfg
}

// startAgent starts an in-process agent and waits until it has a leader
// and has registered its node.
func startAgent(t testing.TB, cfg config.Config) *Agent {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	var lvl slog.Level
	lvl.UnmarshalText([]byte(cfg.LogLevel))
	logger := testkit.Logger(t, lvl)
	a := NewAgent(cfg, logger, io.Discard)
	if err := a.Start(context.Background()); err != nil {
		t.Fatalf("starting agent: %v", err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("closing agent: %v", err)
		}
	})
	testkit.WaitFor(t, 10*time.Second, "node registered", func() bool {
		_, n, _, err := a.store.Node(nil, cfg.NodeName)
		return err == nil && n != nil
	})
	return a
}

// httpDo sends a request to the agent and returns status and body.
func httpDo(t testing.TB, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// getJSON GETs path from the agent and decodes the answer; it returns the
// X-Consul-Index header.
func getJSON(t testing.TB, addr, path string, out any) uint64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", path, resp.Status, body)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("GET %s: decoding %q: %v", path, body, err)
		}
	}
	var idx uint64
	fmt.Sscan(resp.Header.Get("X-Consul-Index"), &idx)
	return idx
}

// writeFile writes content to dir/name and returns the path.
func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a test reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
