package discovery

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func pemOf(s string) []byte {
	return []byte("-----BEGIN CERTIFICATE-----\n" + s + "\n-----END CERTIFICATE-----\n")
}

func caRecord(fp string, prev ...TrustedRoot) *CARoot {
	r := &CARoot{CertPEM: pemOf(fp), Fingerprint: fp, TrustDomain: "vmesh.test",
		SealedKeys: []SealedCAKey{{Node: "s1", Blob: []byte{1}}}, PreviousRoots: prev}
	if len(prev) > 0 {
		r.CrossSignedPEM = pemOf(fp + "-by-" + prev[0].Fingerprint)
	}
	return r
}

func prevOf(r *CARoot) TrustedRoot {
	return TrustedRoot{CertPEM: r.CertPEM, Fingerprint: r.Fingerprint, CrossSignedPEM: r.CrossSignedPEM, DropAfter: 100}
}

// TestSetCARotation: the catalog takes a new CA only as a rotation that
// keeps the current root trusted and adds no other root; the same CA may
// change its custody and drop previous roots.
func TestSetCARotation(t *testing.T) {
	s := NewStore()
	r1 := caRecord("fp1")
	if err := s.SetCA(1, r1); err != nil {
		t.Fatal(err)
	}
	r2 := caRecord("fp2", prevOf(r1))
	stranger := caRecord("fpX")
	for _, tc := range []struct {
		name string
		rec  *CARoot
		want string
	}{
		{"another CA outright", caRecord("fpX"), "only as a rotation"},
		{"a rotation that drops the current root", caRecord("fp2", prevOf(stranger)), "only as a rotation"},
		{"a rotation to another trust domain", func() *CARoot { r := caRecord("fp2", prevOf(r1)); r.TrustDomain = "other.test"; return r }(), "TrustDomain"},
		{"a rotation without the cross-signed root", func() *CARoot { r := caRecord("fp2", prevOf(r1)); r.CrossSignedPEM = nil; return r }(), "CrossSignedPEM"},
		{"a rotation that plants a root", caRecord("fp2", prevOf(r1), prevOf(stranger)), "fpX is not trusted"},
		{"a rotation that leaves no key", func() *CARoot { r := caRecord("fp2", prevOf(r1)); r.SealedKeys = nil; return r }(), "sealed to no server"},
	} {
		if err := s.SetCA(2, tc.rec); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want ErrInvalid naming %q", tc.name, err, tc.want)
		}
	}
	if err := s.SetCA(3, r2); err != nil {
		t.Fatalf("rotation: %v", err)
	}
	_, got, _ := s.CA(nil)
	if got.Fingerprint != "fp2" || got.CreateIndex != 1 || got.ModifyIndex != 3 {
		t.Fatalf("after the rotation: %s at %d/%d; want fp2 created at 1, modified at 3", got.Fingerprint, got.CreateIndex, got.ModifyIndex)
	}
	if want := append(append([]byte(nil), r2.CertPEM...), r1.CertPEM...); !bytes.Equal(got.RootsPEM(), want) {
		t.Errorf("RootsPEM = %q; want the active root then the previous one", got.RootsPEM())
	}
	if !bytes.Equal(got.ChainPEM(), r2.CrossSignedPEM) {
		t.Errorf("ChainPEM = %q; want the new root cross-signed by the old", got.ChainPEM())
	}

	// A second rotation keeps both; the chain reaches the oldest root.
	r3 := caRecord("fp3", prevOf(r2), prevOf(r1))
	if err := s.SetCA(4, r3); err != nil {
		t.Fatalf("second rotation: %v", err)
	}
	_, got, _ = s.CA(nil)
	if want := append(append([]byte(nil), r3.CrossSignedPEM...), r2.CrossSignedPEM...); !bytes.Equal(got.ChainPEM(), want) {
		t.Errorf("ChainPEM after two rotations = %q; want fp3-by-fp2 then fp2-by-fp1", got.ChainPEM())
	}
	// The same CA may drop a previous root, but not change its cross
	// certificate nor bring a dropped root back.
	dropped := *r3
	dropped.PreviousRoots = []TrustedRoot{prevOf(r2)}
	if err := s.SetCA(5, &dropped); err != nil {
		t.Fatalf("dropping the oldest root: %v", err)
	}
	back := *r3
	if err := s.SetCA(6, &back); !errors.Is(err, ErrInvalid) {
		t.Errorf("bringing a dropped root back: %v; want ErrInvalid", err)
	}
	recross := dropped
	recross.CrossSignedPEM = pemOf("other")
	if err := s.SetCA(6, &recross); !errors.Is(err, ErrInvalid) {
		t.Errorf("changing the cross-signed root: %v; want ErrInvalid", err)
	}
	_, got, _ = s.CA(nil)
	if len(got.PreviousRoots) != 1 || got.PreviousRoots[0].Fingerprint != "fp2" {
		t.Fatalf("previous roots = %+v; want fp2 only", got.PreviousRoots)
	}
	if !bytes.Equal(got.ChainPEM(), r3.CrossSignedPEM) {
		t.Errorf("ChainPEM with one previous root = %q; want fp3-by-fp2 only", got.ChainPEM())
	}

	// What a client replica gets keeps the roots, never a key.
	pub := got.Public()
	if len(pub.SealedKeys) != 0 || !bytes.Equal(pub.RootsPEM(), got.RootsPEM()) || !bytes.Equal(pub.ChainPEM(), got.ChainPEM()) {
		t.Errorf("Public: %d sealed keys, roots kept %v; want none, and the roots and chain", len(pub.SealedKeys), bytes.Equal(pub.RootsPEM(), got.RootsPEM()))
	}
}

// TestRevocations: one row per node, at the revocation's own index; a
// delete names that index, so it never deletes a newer revocation; the
// table replicates and snapshots.
func TestRevocations(t *testing.T) {
	s := NewStore()
	if err := s.RevocationApply(5, RevocationAdd, &Revocation{Node: "web-01", Reason: "left the cluster", At: 100, Index: 99}); err != nil {
		t.Fatal(err)
	}
	r, _ := s.Revocation(nil, "web-01")
	if r == nil || r.Index != 5 || r.CreateIndex != 5 {
		t.Fatalf("revocation = %+v; want Index 5 (the command's, not the request's)", r)
	}
	if err := s.RevocationApply(8, RevocationAdd, &Revocation{Node: "web-01", Reason: "removed by an operator", At: 200}); err != nil {
		t.Fatal(err)
	}
	if err := s.RevocationApply(9, RevocationDelete, &Revocation{Node: "web-01", Index: 5}); err != nil {
		t.Fatal(err)
	}
	r, _ = s.Revocation(nil, "web-01")
	if r == nil || r.Index != 8 || r.CreateIndex != 5 || r.Reason != "removed by an operator" {
		t.Fatalf("after a revocation again and a stale delete: %+v; want the newer one (index 8)", r)
	}
	if err := s.RevocationApply(10, RevocationDelete, &Revocation{Node: "web-01", Index: 8}); err != nil {
		t.Fatal(err)
	}
	if idx, all, _ := s.Revocations(nil); len(all) != 0 || idx != 10 {
		t.Fatalf("after the delete: %d revocations at index %d; want none at 10", len(all), idx)
	}
	if err := s.RevocationApply(11, RevocationAdd, &Revocation{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("a revocation without a node: %v; want ErrInvalid", err)
	}
	if err := s.RevocationApply(11, "undo", &Revocation{Node: "x"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("an unknown op: %v; want ErrInvalid", err)
	}
	if _, ok := ReplicaRecord(RecordRevocation, &Revocation{Node: "x"}); !ok {
		t.Error("a client replica does not get revocations: it could not refuse a revoked server")
	}
	if !replicaTables[tableRevocations] {
		t.Error("the revocations table's index does not replicate")
	}
	if s.LastIndex() != 10 {
		t.Errorf("LastIndex = %d; want 10 (the revocations table counts)", s.LastIndex())
	}
}
