package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
)

// TestAgentInProcessProxyTCP: two agents running their in-process proxies
// (-proxy). A client on A writes to A's explicit upstream listener and
// reads the echo of an app on B, through A's proxy and B's inbound mesh
// port over mTLS; the default-deny intentions refuse it until an allow
// intention is written, and again once it is deleted.
func TestAgentInProcessProxyTCP(t *testing.T) {
	skipShort(t)
	t.Parallel()
	nodes := bootCluster(t, "127.9.0.", 2, "-proxy")
	a, b := nodes[0], nodes[1]

	// A TCP echo app on B's address that tells who connected.
	ln, err := net.Listen("tcp", b.ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	if code, body := testkit.HTTPDo(t, http.MethodPut, "http://"+b.httpAddr()+"/v1/agent/service/register",
		fmt.Sprintf(`{"Name":"echo","Address":%q,"Port":%d}`, b.ip, port)); code != 200 {
		t.Fatalf("register echo on B: %d %s", code, body)
	}
	// No LocalBindAddress: A's proxy listens on A's client address.
	upstream := 20000 + port%10000
	upAddr := net.JoinHostPort(a.ip, fmt.Sprint(upstream))
	if code, body := testkit.HTTPDo(t, http.MethodPut, "http://"+a.httpAddr()+"/v1/agent/service/register",
		fmt.Sprintf(`{"Name":"web","Port":1,"Connect":{"SidecarService":{"Proxy":{"Upstreams":[{"DestinationName":"echo","LocalBindPort":%d}]}}}}`, upstream)); code != 200 {
		t.Fatalf("register web on A: %d %s", code, body)
	}
	echo := func() (string, error) {
		c, err := net.DialTimeout("tcp", upAddr, time.Second)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := fmt.Fprintln(c, "hello through the mesh"); err != nil {
			return "", err
		}
		return bufio.NewReader(c).ReadString('\n')
	}

	// Production default: deny. Once A's upstream listener is up, the
	// connection is accepted there and refused at B: the app never sees it.
	testkit.WaitFor(t, 10*time.Second, "A's upstream listener", func() bool {
		c, err := net.DialTimeout("tcp", upAddr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if got, err := echo(); err == nil && strings.HasPrefix(got, "hello") {
		t.Fatalf("echo answered without an allow intention (default deny): %q", got)
	}
	if len(accepted) > 0 {
		t.Fatal("the app saw a connection that the default-deny intentions should have stopped at B")
	}
	if code, body := testkit.HTTPDo(t, http.MethodPut, "http://"+a.httpAddr()+"/v1/connect/intentions/exact?source=web&destination=echo",
		`{"Action":"allow"}`); code != 200 {
		t.Fatalf("allow intention: %d %s", code, body)
	}
	var got string
	testkit.WaitFor(t, 10*time.Second, "an echo through both proxies", func() bool {
		got, err = echo()
		return err == nil && got == "hello through the mesh\n"
	})
	// Only B's inbound listener enforces intentions, so the refusal before
	// and after the allow intention proves the bytes go A's proxy → B's
	// mesh port (mTLS, B checks web's certificate) → the app.
	if code, body := testkit.HTTPDo(t, http.MethodDelete, "http://"+b.httpAddr()+"/v1/connect/intentions/exact?source=web&destination=echo", ""); code != 200 {
		t.Fatalf("delete intention: %d %s", code, body)
	}
	testkit.WaitFor(t, 10*time.Second, "the echo refused again without the intention", func() bool {
		got, err := echo()
		return err != nil || !strings.HasPrefix(got, "hello")
	})
}
