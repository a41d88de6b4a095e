package proxy

import (
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// onlyFields fails when m sets a field outside allowed: the proxy must
// never accept a field it would silently ignore, so every message it reads
// is checked against the list of fields it honours. path names m in the
// error ("listener vmesh/inbound: filter_chains[0]").
func onlyFields(m proto.Message, path string, allowed ...string) error {
	var bad string
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if !slices.Contains(allowed, string(fd.Name())) {
			bad = string(fd.Name())
			return false
		}
		return true
	})
	if bad != "" {
		return fmt.Errorf("%w: %s.%s is not supported", ErrUnsupported, path, bad)
	}
	if len(m.ProtoReflect().GetUnknown()) > 0 {
		return fmt.Errorf("%w: %s has fields this proxy does not know", ErrUnsupported, path)
	}
	return nil
}
