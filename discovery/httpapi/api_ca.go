package httpapi

import (
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/discovery"
)

// CARootList is GET /v1/connect/ca/roots: Consul's shape (consul/api's
// CARootList), one entry per root the cluster trusts, the active one
// marked. IDs are SHA-256 fingerprints, as join tokens pin them.
type CARootList struct {
	ActiveRootID string
	TrustDomain  string
	Roots        []CARootInfo
}

// CARootInfo is one trusted root. RetiredAt and DropAfter are vmesh's: when
// a rotation replaced the root and when it stops being trusted.
type CARootInfo struct {
	ID       string
	Name     string
	RootCert string
	// IntermediateCerts is what a certificate of the active key presents
	// after itself: the cross-signed roots down to the oldest trusted one.
	IntermediateCerts []string `json:",omitempty"`
	Active            bool
	NotBefore         time.Time
	NotAfter          time.Time
	RetiredAt         *time.Time `json:",omitempty"`
	DropAfter         *time.Time `json:",omitempty"`
	CreateIndex       uint64
	ModifyIndex       uint64
}

// CARoots renders a CA record (nil: none yet) as the roots endpoint shows it.
func CARoots(ca *discovery.CARoot) CARootList {
	out := CARootList{Roots: []CARootInfo{}}
	if ca == nil {
		return out
	}
	out.ActiveRootID, out.TrustDomain = ca.Fingerprint, ca.TrustDomain
	active := rootInfo(ca.Fingerprint, ca.CertPEM, ca)
	active.Active = true
	for rest := ca.ChainPEM(); len(rest) > 0; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		active.IntermediateCerts = append(active.IntermediateCerts, string(pem.EncodeToMemory(b)))
	}
	out.Roots = append(out.Roots, active)
	for _, p := range ca.PreviousRoots {
		info := rootInfo(p.Fingerprint, p.CertPEM, ca)
		retired, drop := time.Unix(p.RetiredAt, 0).UTC(), time.Unix(p.DropAfter, 0).UTC()
		info.RetiredAt, info.DropAfter = &retired, &drop
		out.Roots = append(out.Roots, info)
	}
	return out
}

func rootInfo(id string, certPEM []byte, ca *discovery.CARoot) CARootInfo {
	info := CARootInfo{ID: id, RootCert: string(certPEM), CreateIndex: ca.CreateIndex, ModifyIndex: ca.ModifyIndex}
	if b, _ := pem.Decode(certPEM); b != nil {
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			info.Name, info.NotBefore, info.NotAfter = c.Subject.CommonName, c.NotBefore.UTC(), c.NotAfter.UTC()
		}
	}
	return info
}

// caRoots serves GET /v1/connect/ca/roots from the local catalog (on a
// client, its replica), with blocking queries.
func (a *API) caRoots(w http.ResponseWriter, r *http.Request) {
	var ca *discovery.CARoot
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, root, err := a.Store.CA(ws)
		ca = root
		return idx, err
	}) {
		return
	}
	writeJSON(w, CARoots(ca))
}

// vmeshCARotate serves PUT /v1/vmesh/ca/rotate: the leader replaces the
// CA; the answer is the roots once this agent's catalog holds the new one.
func (a *API) vmeshCARotate(w http.ResponseWriter, r *http.Request) {
	ca, err := a.Operator.RotateCA(r.Context())
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, CARoots(ca))
}

// agentForceLeave serves PUT /v1/agent/force-leave/{node} (Consul's
// path): the node is taken out of raft and the catalog and its
// certificates are revoked, whether or not it answers. vmesh always
// prunes; ?prune is accepted and changes nothing.
func (a *API) agentForceLeave(w http.ResponseWriter, r *http.Request) {
	if err := a.Operator.ForceLeave(r.Context(), r.PathValue("node")); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}
