package e2e

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
)

// TestProxyCertRotationUnderLoad: with 30 s service certificates (the
// shortest leaf_cert_ttl allowed, renewed every 15 s) on both agents, 90 s
// of HTTP at ~200 req/s through A's upstream and B's mesh port, on
// keep-alive and on fresh connections, see not one failed request, while
// the certificate B's mesh port presents changes at least twice (and so
// does the one A's proxy presents for the caller). About six rotations
// happen on each side. It runs for about 2 minutes; -short skips it.
func TestProxyCertRotationUnderLoad(t *testing.T) {
	skipShort(t)
	t.Parallel()
	cfg := testkit.WriteFile(t, t.TempDir(), "rotation.hcl", "proxy {\n  leaf_cert_ttl = \"30s\"\n}\n")
	nodes := bootCluster(t, "127.44.0.", 2, "-proxy", "-config", cfg)
	a, b := nodes[0], nodes[1]
	app := startHTTPApp(t, b.ip, "web-1")
	b.registerJSON(fmt.Sprintf(`{"ID":"web-1","Name":"web","Address":%q,"Port":%d,"Meta":{"protocol":"http"}}`, b.ip, app.port()))
	a.registerJSON(`{"ID":"client-1","Name":"client","Port":1,"Connect":{"SidecarService":{"Proxy":{"Upstreams":[
		{"DestinationName":"web","LocalBindPort":21301}]}}}}`)
	a.intention("client", "web", "allow")
	url := "http://" + hostPort(a.ip, 21301)
	keepAlive := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	fresh := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	testkit.WaitFor(t, 30*time.Second, "HTTP through A's upstream", func() bool {
		code, _, _, err := httpCall(keepAlive, http.MethodGet, url+"/ready", "")
		return err == nil && code == 200
	})

	// The serial of the certificate B's mesh port presents for web, read
	// by a client holding the caller's current mesh certificate.
	meshAddr := hostPort(b.ip, 15443)
	servedSerial := func() (string, error) {
		cert, _ := a.serviceCert("client")
		c, err := tls.Dial("tcp", meshAddr, &tls.Config{ServerName: "web.mesh", Certificates: []tls.Certificate{cert},
			NextProtos: []string{"http/1.1"}, InsecureSkipVerify: true})
		if err != nil {
			return "", err
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
	}

	const (
		duration = 90 * time.Second
		workers  = 4 // two on keep-alive connections, two on a new connection per request
		interval = 20 * time.Millisecond
	)
	var ok, failed atomic.Int64
	var mu sync.Mutex
	var failures []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		c := keepAlive
		if w%2 == 1 {
			c = fresh
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				code, _, body, err := httpCall(c, http.MethodGet, fmt.Sprintf("%s/rot/%d/%d", url, w, i), "")
				if err == nil && code == 200 {
					ok.Add(1)
					continue
				}
				failed.Add(1)
				mu.Lock()
				failures = append(failures, fmt.Sprintf("%s: %d %q %v", time.Now().Format("15:04:05.000"), code, strings.TrimSpace(body), err))
				mu.Unlock()
			}
		}()
	}

	serials := map[string]bool{}
	var order []string
	clientSerials := map[string]bool{}
	deadline := time.Now().Add(duration)
	// A sample every 2 s: pacing the sampler, not waiting for anything.
	sample := time.NewTicker(2 * time.Second)
	defer sample.Stop()
	for time.Now().Before(deadline) {
		s, err := servedSerial()
		if err != nil {
			t.Errorf("reading B's mesh certificate: %v", err)
		} else if !serials[s] {
			serials[s] = true
			order = append(order, time.Now().Format("15:04:05")+" "+s)
		}
		cert, _ := a.serviceCert("client")
		clientSerials[cert.Leaf.SerialNumber.String()] = true
		<-sample.C
	}
	close(stop)
	wg.Wait()

	t.Logf("%d requests ok, %d failed; B's mesh port presented %d certificates: %v; A's client certificate: %d",
		ok.Load(), failed.Load(), len(serials), order, len(clientSerials))
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d requests failed across certificate rotations; first: %s", n, n+ok.Load(), failures[0])
	}
	if ok.Load() < int64(duration/interval)*workers/2 {
		t.Errorf("only %d requests in %s: the load did not run", ok.Load(), duration)
	}
	// Two rotations at least: three different certificates.
	if len(serials) < 3 {
		t.Errorf("B's mesh port presented %d certificates in %s, want at least 3 (two rotations)", len(serials), duration)
	}
	if len(clientSerials) < 3 {
		t.Errorf("A's proxy was given %d client certificates in %s, want at least 3", len(clientSerials), duration)
	}
}
