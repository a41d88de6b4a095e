package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// The nginx and HAProxy paths run mutual TLS between their two hops, as
// the mesh does between its proxies: hop 2 presents hop2.pem (a server
// certificate for hop2.bench and the loopback addresses) and requires a
// client certificate from the CA, hop 1 presents hop1.pem and checks
// hop 2's against the CA. Same key type as vmesh's certificates (ECDSA
// P-256), so the handshakes cost alike.

// serverName is the name hop 1 verifies and sends as SNI.
const serverName = "hop2.bench"

func runCerts(args []string) error {
	fs := flag.NewFlagSet("certs", flag.ContinueOnError)
	dir := fs.String("dir", "", "write the files into this `dir`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("-dir is required")
	}
	return writeCerts(*dir)
}

type keyPair struct {
	cert *x509.Certificate
	der  []byte
	key  *ecdsa.PrivateKey
}

func newCert(tmpl *x509.Certificate, parent *keyPair) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(7 * 24 * time.Hour)
	signer, parentCert := key, tmpl
	if parent != nil {
		signer, parentCert = parent.key, parent.cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, &key.PublicKey, signer)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &keyPair{cert: cert, der: der, key: key}, nil
}

func (k *keyPair) pem() (certPEM, keyPEM []byte, err error) {
	kd, err := x509.MarshalPKCS8PrivateKey(k.key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), nil
}

func writeCerts(dir string) error {
	ca, err := newCert(&x509.Certificate{
		Subject:               pkix.Name{CommonName: "vmesh proxy benchmark CA"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil)
	if err != nil {
		return fmt.Errorf("creating the CA: %w", err)
	}
	hop2, err := newCert(&x509.Certificate{
		Subject:     pkix.Name{CommonName: serverName},
		DNSNames:    []string{serverName},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca)
	if err != nil {
		return fmt.Errorf("creating hop2's certificate: %w", err)
	}
	hop1, err := newCert(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "hop1.bench"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca)
	if err != nil {
		return fmt.Errorf("creating hop1's certificate: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	caPEM, _, err := ca.pem()
	if err != nil {
		return err
	}
	files := map[string][]byte{"ca.pem": caPEM}
	for name, k := range map[string]*keyPair{"hop1": hop1, "hop2": hop2} {
		c, key, err := k.pem()
		if err != nil {
			return err
		}
		files[name+".pem"] = c
		files[name+"-key.pem"] = key
		files[name+"-bundle.pem"] = append(append([]byte{}, c...), key...)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}
