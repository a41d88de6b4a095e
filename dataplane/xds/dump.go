package xds

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// dumpTypes are the resource types a snapshot dump shows, in the order a
// reader follows them: listeners to routes to clusters to endpoints.
var dumpTypes = []struct {
	key string
	typ resource.Type
}{
	{"listeners", resource.ListenerType},
	{"routes", resource.RouteType},
	{"clusters", resource.ClusterType},
	{"endpoints", resource.EndpointType},
	{"secrets", resource.SecretType},
}

// SnapshotJSON renders a snapshot as JSON: per type, its version and its
// resources in name order, each as protojson. The output is stable (the
// whitespace protojson randomizes is normalized), so tests compare it with
// golden files and operators diff it.
func SnapshotJSON(s interface {
	GetResources(resource.Type) map[string]types.Resource
	GetVersion(resource.Type) string
}) (json.RawMessage, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	first := true
	for _, dt := range dumpTypes {
		res := s.GetResources(dt.typ)
		if len(res) == 0 {
			continue
		}
		if !first {
			buf.WriteByte(',')
		}
		first = false
		fmt.Fprintf(&buf, "%q:{\"version\":%q,\"resources\":[", dt.key, s.GetVersion(dt.typ))
		names := make([]string, 0, len(res))
		for n := range res {
			names = append(names, n)
		}
		sort.Strings(names)
		for i, n := range names {
			if i > 0 {
				buf.WriteByte(',')
			}
			b, err := protojson.Marshal(redact(res[n].(proto.Message)))
			if err != nil {
				return nil, fmt.Errorf("rendering %s %q: %w", dt.key, n, err)
			}
			buf.Write(b)
		}
		buf.WriteString("]}")
	}
	buf.WriteByte('}')
	var out bytes.Buffer
	if err := json.Indent(&out, compact(buf.Bytes()), "", "  "); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// redact hides a secret's private key, as Envoy's own config dump does: a
// dump is for reading and diffing, and goes to places keys must not.
func redact(m proto.Message) proto.Message {
	sec, ok := m.(*tlsv3.Secret)
	if !ok || sec.GetTlsCertificate().GetPrivateKey() == nil {
		return m
	}
	c := proto.Clone(sec).(*tlsv3.Secret)
	c.GetTlsCertificate().PrivateKey = &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: "[redacted]"}}
	return c
}

func compact(b []byte) []byte {
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return b
	}
	return out.Bytes()
}
