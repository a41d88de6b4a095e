package xds

import (
	"crypto/sha256"
	"encoding/hex"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
)

// SecretSource supplies the TLS secrets (served over SDS) of a mesh node's
// proxy: its leaf certificates and the CA roots. The translation names
// them (SecretNodeCert, ServiceSecret(svc), SecretRoots); the source holds
// the keys, so Build stays pure.
type SecretSource interface {
	// Secrets returns the secrets of node's proxy; none for a node whose
	// keys this agent does not hold.
	Secrets(node string) []*tlsv3.Secret
	// Changed is closed when the secrets change (a new service, a renewed
	// leaf, a new CA).
	Changed() <-chan struct{}
}

// CertSecret is a TLS certificate secret from PEM.
func CertSecret(name string, certPEM, keyPEM []byte) *tlsv3.Secret {
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: certPEM}},
		PrivateKey:       &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: keyPEM}},
	}}}
}

// RootsSecret is the validation context secret that trusts the CA roots.
func RootsSecret(rootsPEM []byte) *tlsv3.Secret {
	return &tlsv3.Secret{Name: SecretRoots, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: rootsPEM}},
	}}}
}

// addSecrets puts secrets into snap, versioned by their content so an
// unchanged set keeps its version.
func addSecrets(snap *cache.Snapshot, secrets []*tlsv3.Secret) error {
	h := sha256.New()
	items := make([]types.Resource, 0, len(secrets))
	for _, s := range secrets {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(s)
		if err != nil {
			return err
		}
		h.Write(b)
		items = append(items, s)
	}
	version := "s-" + hex.EncodeToString(h.Sum(nil))[:16]
	snap.Resources[cache.GetResponseType(resource.SecretType)] = cache.NewResources(version, items)
	return nil
}
