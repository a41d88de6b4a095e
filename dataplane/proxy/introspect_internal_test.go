package proxy

import (
	"strings"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
)

// Private keys never leave through the config dump: neither an SDS
// secret's nor one inline in a listener's transport socket (inside an
// Any inside the listener).
func TestRedactAny(t *testing.T) {
	key := &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: "-----BEGIN PRIVATE KEY----- SECRET"}}
	cert := &tlsv3.TlsCertificate{
		CertificateChain: &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: "CERT"}},
		PrivateKey:       key,
	}
	secret := &tlsv3.Secret{Name: "leaf", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: cert}}
	dtc, _ := anypb.New(&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificates: []*tlsv3.TlsCertificate{cert}}})
	l := &listener.Listener{Name: "l", FilterChains: []*listener.FilterChain{{TransportSocket: &core.TransportSocket{
		Name: "tls", ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: dtc}}}}}
	sa, _ := anypb.New(secret)
	la, _ := anypb.New(l)
	for name, a := range map[string]*anypb.Any{"secret": sa, "listener": la} {
		js, err := protojson.Marshal(redactAny(a))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(js), "SECRET") || !strings.Contains(string(js), Redacted) || !strings.Contains(string(js), "CERT") {
			t.Errorf("%s redacted: %s; want the key replaced by %q and the certificate kept", name, js, Redacted)
		}
	}
	if !strings.Contains(key.GetInlineString(), "SECRET") {
		t.Error("redaction changed the proxy's own copy")
	}
}
