package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/vmesh/vmesh/lab/testkit"
)

// TestSidecarRecordIsTheNodeProxy: web registered on n1 with a
// SidecarService gets a web-sidecar-proxy record, and /v1/health/connect
// on the other node answers that record (not web itself) as web's only
// Connect endpoint. Its address and port are where n1's node proxy
// really takes web's mTLS: a client holding caller's leaf (from n2) that
// dials exactly there, with web's SNI, is answered by web's app, and the
// proxy presents web's identity. Deregistering web takes the record too.
func TestSidecarRecordIsTheNodeProxy(t *testing.T) {
	skipShort(t)
	t.Parallel()
	n1 := newNode(t, "n1", "127.53.0.1", "-proxy").start("-bootstrap")
	testkit.WaitFor(t, 15*time.Second, "n1 leads", func() bool { return n1.leader() != "" })
	n2 := newClientNode(t, "n2", "127.53.0.2", "-proxy").start("-join", n1.clusterAddr(), "-token-file", n1.tokenFile("1h"))
	testkit.WaitFor(t, 20*time.Second, "n2 knows the leader", func() bool { return n2.leader() != "" })

	web := startHTTPApp(t, n1.ip, "web-1")
	n1.registerJSON(fmt.Sprintf(`{"ID":"web-1","Name":"web","Address":%q,"Port":%d,"Meta":{"protocol":"http"},"Connect":{"SidecarService":{}}}`, n1.ip, web.port()))
	n2.registerJSON(`{"ID":"caller-1","Name":"caller","Port":1}`)
	n1.intention("caller", "web", "allow")

	c1, c2 := consulClient(t, n1), consulClient(t, n2)
	if svcs, err := c1.Agent().Services(); err != nil || svcs["web-1"] == nil || svcs["web-1-sidecar-proxy"] == nil {
		t.Fatalf("n1's agent services = %v, %v; want web-1 and web-1-sidecar-proxy", svcs, err)
	}
	var ep *api.ServiceEntry
	testkit.WaitFor(t, 20*time.Second, "web's Connect endpoint as n2 sees it", func() bool {
		es, _, err := c2.Health().Connect("web", "", true, nil)
		if err != nil || len(es) != 1 {
			return false
		}
		ep = es[0]
		return true
	})
	if ep.Node.Node != "n1" || ep.Service.ID != "web-1-sidecar-proxy" || ep.Service.Kind != api.ServiceKindConnectProxy ||
		ep.Service.Proxy == nil || ep.Service.Proxy.DestinationServiceName != "web" {
		t.Fatalf("web's Connect endpoint = node %s service %+v", ep.Node.Node, ep.Service)
	}
	addr := ep.Service.Address
	if addr == "" {
		addr = ep.Node.Address
	}
	target := net.JoinHostPort(addr, strconv.Itoa(ep.Service.Port))

	// caller's identity, as n2's proxy presents it on the mesh.
	leaf, roots := n2.serviceCert("caller")
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: []tls.Certificate{leaf}, ServerName: "web.mesh", NextProtos: []string{"http/1.1"},
		// The proxy's certificate names web by its SPIFFE ID, not a DNS
		// name: check the chain and that ID here.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			cert := cs.PeerCertificates[0]
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return err
			}
			if len(cert.URIs) != 1 || cert.URIs[0].String() != "spiffe://vmesh.local/svc/web" {
				return fmt.Errorf("the proxy presents %v, want web's identity", cert.URIs)
			}
			return nil
		},
	}}}
	var last string
	ok := testkit.Eventually(20*time.Second, func() bool {
		code, app, body, err := httpCall(client, http.MethodGet, "https://"+target+"/hello", "")
		last = fmt.Sprintf("%d %s %q %v", code, app, body, err)
		return err == nil && code == http.StatusOK && app == "web-1"
	})
	if !ok {
		t.Fatalf("mTLS to the sidecar record's %s as caller: %s; want web-1's answer", target, last)
	}

	n1.mustAPI(http.MethodPut, "/v1/agent/service/deregister/web-1", "")
	if svcs, err := c1.Agent().Services(); err != nil || svcs["web-1-sidecar-proxy"] != nil {
		t.Errorf("after deregistering web-1: %v, %v", svcs, err)
	}
	testkit.WaitFor(t, 10*time.Second, "no Connect endpoint of web left", func() bool {
		es, _, err := c2.Health().Connect("web", "", false, nil)
		return err == nil && len(es) == 0
	})
}
