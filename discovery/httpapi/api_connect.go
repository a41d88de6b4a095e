package httpapi

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
)

// LeafSource is the agent's leaf issuer as the Connect endpoints see it:
// it keeps a leaf certificate for every service registered on this node
// (package raft's LeafIssuer behind an adapter in package mesh).
type LeafSource interface {
	// ServiceLeaf is this node's current leaf for service (nil until it
	// is issued) and a channel closed at the issuer's next change.
	ServiceLeaf(service string) (*ServiceLeaf, <-chan struct{})
}

// ServiceLeaf is one service's leaf certificate and key, PEM-encoded.
// Index grows with every leaf the issuer makes; it is the leaf
// endpoint's blocking index.
type ServiceLeaf struct {
	CertPEM, KeyPEM []byte
	URI             string
	Index           uint64
}

// leafCert is Consul's api.LeafCert.
type leafCert struct {
	SerialNumber  string
	CertPEM       string
	PrivateKeyPEM string
	Service       string
	ServiceURI    string
	ValidAfter    time.Time
	ValidBefore   time.Time
	CreateIndex   uint64
	ModifyIndex   uint64
}

// leafFirstWait bounds how long a leaf request without ?index waits for a
// just-registered service's first leaf (on a client, signing is an RPC to
// a server).
const leafFirstWait = time.Minute

// registerConnect adds Consul's Connect endpoints that vmesh serves from
// its own CA, leaf issuer and intentions.
func (a *API) registerConnect(mux *http.ServeMux) {
	// The roots are public, as on /v1/connect/ca/roots.
	mux.HandleFunc("GET /v1/agent/connect/ca/roots", a.caRoots)
	mux.HandleFunc("GET /v1/agent/connect/ca/leaf/{service}", a.agentConnectLeaf)
	mux.HandleFunc("POST /v1/agent/connect/authorize", a.agentConnectAuthorize)
	mux.Handle("GET /v1/connect/ca/configuration", a.guard(func(z *acl.Authorizer) error { return z.OperatorRead() }, http.HandlerFunc(a.caConfiguration)))
	// A service's Connect endpoints, node by node: the node's connect-proxy
	// records for it (an agent's sidecar record: its node proxy) where it
	// has any, else its instances on an agent's node (the node's proxy
	// fronts them) and Connect-native ones on an external node
	// (discovery.ConnectServiceNodes). Same ACL rules, filters and
	// blocking as the service views.
	mux.HandleFunc("GET /v1/health/connect/{name}", a.healthConnect)
	mux.HandleFunc("GET /v1/catalog/connect/{name}", a.catalogConnect)
}

// agentConnectLeaf serves GET /v1/agent/connect/ca/leaf/:service: the
// leaf certificate and private key this agent holds for a service
// registered on it. It needs service:write on the service, as Consul: the
// key lets its holder be that service in the mesh. It blocks on ?index
// like a catalog read, and without one until the first leaf is issued.
func (a *API) agentConnectLeaf(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("service")
	if _, ok := a.allow(w, r, func(z *acl.Authorizer) error { return z.ServiceWrite(name) }); !ok {
		return
	}
	o, err := a.parseQuery(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	wait := leafFirstWait
	if o.minIndex > 0 {
		wait = o.wait
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	for {
		ws := memdb.NewWatchSet()
		_, insts, err := a.Store.NodeInstances(ws, a.NodeName)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		registered := false
		for _, in := range insts {
			// A proxy or gateway record is no mesh service: no identity.
			registered = registered || (in.Service == name && in.InMesh())
		}
		if !registered {
			a.writeError(w, r, notFound("service %q is not registered on this agent as a mesh service: it issues leaf certificates only for its own services (not for proxy or gateway records)", name))
			return
		}
		if a.Leaves == nil {
			a.writeError(w, r, &HTTPError{Code: http.StatusInternalServerError, Msg: "this agent issues no leaf certificates"})
			return
		}
		leaf, changed := a.Leaves.ServiceLeaf(name)
		ws.Add(changed)
		if leaf != nil && leaf.Index > o.minIndex {
			a.writeLeaf(w, r, name, leaf)
			return
		}
		if ws.WatchCtx(ctx) != nil {
			if r.Context().Err() != nil {
				return
			}
			if leaf != nil { // a blocking query that timed out: the current one
				a.writeLeaf(w, r, name, leaf)
				return
			}
			a.writeError(w, r, &HTTPError{Code: http.StatusInternalServerError,
				Msg: fmt.Sprintf("no leaf certificate for %q after %s: the cluster CA has not signed one yet", name, wait)})
			return
		}
	}
}

func (a *API) writeLeaf(w http.ResponseWriter, r *http.Request, name string, leaf *ServiceLeaf) {
	b, _ := pem.Decode(leaf.CertPEM)
	if b == nil {
		a.writeError(w, r, fmt.Errorf("the leaf certificate of %q does not parse", name))
		return
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		a.writeError(w, r, fmt.Errorf("the leaf certificate of %q does not parse: %w", name, err))
		return
	}
	w.Header().Set("X-Consul-Index", fmt.Sprint(max(leaf.Index, 1)))
	writeJSON(w, leafCert{
		SerialNumber: colonHex(cert.SerialNumber.Bytes()),
		CertPEM:      string(leaf.CertPEM), PrivateKeyPEM: string(leaf.KeyPEM),
		Service: name, ServiceURI: leaf.URI,
		ValidAfter: cert.NotBefore.UTC(), ValidBefore: cert.NotAfter.UTC(),
		CreateIndex: leaf.Index, ModifyIndex: leaf.Index,
	})
}

// colonHex writes a serial number as Consul does: hex bytes joined by ':'.
func colonHex(b []byte) string {
	parts := make([]string, len(b))
	for i, c := range b {
		parts[i] = fmt.Sprintf("%02x", c)
	}
	return strings.Join(parts, ":")
}

// agentConnectAuthorize serves POST /v1/agent/connect/authorize: may the
// service named by a client certificate's SPIFFE ID connect to Target?
// Intentions decide, then this agent's intentions_default, as
// /v1/connect/intentions/check. It needs service:write on Target, as
// Consul (the caller is Target's proxy). Unlike Consul, a URI from another
// trust domain than this cluster's is refused: vmesh trusts one CA.
func (a *API) agentConnectAuthorize(w http.ResponseWriter, r *http.Request) {
	var body struct{ Target, ClientCertURI, ClientCertSerial string }
	if err := decodeBody(w, r, &body); err != nil {
		a.writeError(w, r, err)
		return
	}
	if body.Target == "" {
		a.writeError(w, r, badRequest("Target: required"))
		return
	}
	td, src, err := spiffeService(body.ClientCertURI)
	if err != nil {
		a.writeError(w, r, badRequest("ClientCertURI: %v", err))
		return
	}
	if _, ok := a.allow(w, r, func(z *acl.Authorizer) error { return z.ServiceWrite(body.Target) }); !ok {
		return
	}
	type answer struct {
		Authorized bool
		Reason     string
	}
	_, ca, err := a.Store.CA(nil)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if ca == nil || !strings.EqualFold(ca.TrustDomain, td) {
		writeJSON(w, answer{Reason: fmt.Sprintf("Client certificate is not from this cluster's trust domain (%q)", td)})
		return
	}
	var allowed bool
	var decided *discovery.Intention
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, ixns, err := a.Store.IntentionMatch(ws, "destination", body.Target)
		allowed, decided = discovery.IntentionDecision(ixns, src, body.Target, a.IntentionsDefaultAllow)
		return idx, err
	}) {
		return
	}
	reason := "Default behavior configured by ACLs"
	if decided != nil {
		reason = fmt.Sprintf("Matched L4 intention: %s => %s (ID: %s, Precedence: %d)",
			decided.SourceName, decided.DestinationName, decided.ID, decided.Precedence())
	}
	writeJSON(w, answer{Authorized: allowed, Reason: reason})
}

// spiffeService reads a service's SPIFFE ID: vmesh's
// spiffe://<td>/svc/<name> or Consul's
// spiffe://<td>/ns/default/dc/<dc>/svc/<name>.
func spiffeService(raw string) (trustDomain, service string, err error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "spiffe" || u.Host == "" {
		return "", "", fmt.Errorf("%q is not a spiffe:// URI", raw)
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	switch {
	case len(parts) == 2 && parts[0] == "svc" && parts[1] != "":
		return u.Host, parts[1], nil
	case len(parts) == 6 && parts[0] == "ns" && parts[2] == "dc" && parts[4] == "svc" && parts[5] != "":
		if parts[1] != "default" {
			return "", "", fmt.Errorf("namespace %q: vmesh has only the default namespace", parts[1])
		}
		return u.Host, parts[5], nil
	}
	return "", "", fmt.Errorf("%q is not a service's identity (spiffe://<trust domain>/svc/<name>)", raw)
}

// caConfiguration serves GET /v1/connect/ca/configuration (operator:read,
// as Consul): vmesh's built-in CA, in Consul's shape for its "consul"
// provider. The CA is changed with `vmesh ca rotate`, not by a PUT here.
func (a *API) caConfiguration(w http.ResponseWriter, r *http.Request) {
	var ca *discovery.CARoot
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, root, err := a.Store.CA(ws)
		ca = root
		return idx, err
	}) {
		return
	}
	if ca == nil {
		a.writeError(w, r, &HTTPError{Code: http.StatusInternalServerError, Msg: "the cluster CA is not initialized yet"})
		return
	}
	cfg := map[string]any{"PrivateKeyType": "ec", "PrivateKeyBits": 256}
	if a.LeafCertTTL > 0 {
		cfg["LeafCertTTL"] = a.LeafCertTTL.String()
	}
	writeJSON(w, map[string]any{
		"Provider":                 "consul",
		"ClusterID":                strings.TrimSuffix(ca.TrustDomain, ".consul"),
		"Config":                   cfg,
		"State":                    nil,
		"ForceWithoutCrossSigning": false,
		"CreateIndex":              ca.CreateIndex,
		"ModifyIndex":              ca.ModifyIndex,
	})
}
