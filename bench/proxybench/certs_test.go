package main

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestCertsMutualTLS: the files certs writes make a mutual TLS
// connection as the nginx and HAProxy hops use them (hop 1 verifies
// hop2.bench, hop 2 requires hop 1's certificate), and hop 2 refuses a
// client without one.
func TestCertsMutualTLS(t *testing.T) {
	dir := t.TempDir()
	if err := writeCerts(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ca.pem", "hop1.pem", "hop1-key.pem", "hop2.pem", "hop2-key.pem", "hop1-bundle.pem", "hop2-bundle.pem"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Fatalf("%s: %v", f, err)
		}
	}
	roots := x509.NewCertPool()
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil || !roots.AppendCertsFromPEM(caPEM) {
		t.Fatalf("ca.pem: %v", err)
	}
	// The bundle is what HAProxy loads: certificate and key in one file.
	hop2, err := tls.LoadX509KeyPair(filepath.Join(dir, "hop2-bundle.pem"), filepath.Join(dir, "hop2-bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	hop1, err := tls.LoadX509KeyPair(filepath.Join(dir, "hop1.pem"), filepath.Join(dir, "hop1-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{hop2}, ClientCAs: roots, ClientAuth: tls.RequireAndVerifyClientCert,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.WriteString(c, "ok") }()
		}
	}()
	dial := func(certs []tls.Certificate) (string, error) {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: serverName, Certificates: certs})
		if err != nil {
			return "", err
		}
		defer c.Close()
		b, err := io.ReadAll(c)
		return string(b), err
	}
	if got, err := dial([]tls.Certificate{hop1}); err != nil || got != "ok" {
		t.Fatalf("hop1 -> hop2: %q, %v", got, err)
	}
	if got, err := dial(nil); err == nil && got == "ok" {
		t.Fatal("hop2 answered a client without a certificate")
	}
	// hop2's certificate is a server's: it does not pass as a client's.
	if got, err := dial([]tls.Certificate{hop2}); err == nil && got == "ok" {
		t.Fatal("hop2 accepted hop2's server certificate as a client certificate")
	}
}
