package httpapi

import (
	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
)

// The read side of the ACLs, as Consul's aclfilter package has it: a
// list keeps what the token may read and says whether it left anything
// out (the X-Consul-Results-Filtered-By-ACLs header, setFiltered); a
// read of one named thing the token may not read is a 403. The filters
// run inside a read's query function, so that a blocking query wakes on
// the catalog's index and the header describes the answer it goes with,
// and before ?filter= and ?node-meta=, as in Consul: after them, the
// header would tell whether a hidden entry matches an expression, which
// lets a caller probe what it may not read.
//
//	node                     node:read on it
//	service instance         node:read on its node and service:read on its service
//	health check             node:read on its node and, for a service's check, service:read
//	this agent's services    service:read (no node rule: the agent's own)
//	this agent's checks      service:read for a service's, node:read on this node for the node's
//	member                   node:read on its name
//	intention                intention:read on its source or its destination
//	config entry             discovery.AuthorizeConfigEntryRead

// keep returns the elements of in that ok allows (a new slice) and
// whether it left any out.
func keep[T any](in []T, ok func(T) bool) ([]T, bool) {
	out := in[:0:0]
	for _, v := range in {
		if ok(v) {
			out = append(out, v)
		}
	}
	return out, len(out) != len(in)
}

// keepMap deletes the values of m that ok does not allow and says
// whether it deleted any.
func keepMap[T any](m map[string]T, ok func(string, T) bool) bool {
	filtered := false
	for k, v := range m {
		if !ok(k, v) {
			delete(m, k)
			filtered = true
		}
	}
	return filtered
}

func nodeReadable(z *acl.Authorizer, node string) bool { return z.NodeRead(node) == nil }

// serviceReadable: a check of no service ("") needs no service rule.
func serviceReadable(z *acl.Authorizer, service string) bool {
	return service == "" || z.ServiceRead(service) == nil
}

// entryReadable: an instance needs read on its node and its service.
func entryReadable(z *acl.Authorizer, in *discovery.Instance) bool {
	return nodeReadable(z, in.Node) && serviceReadable(z, in.Service)
}

func checkReadable(z *acl.Authorizer, c *discovery.Check) bool {
	return nodeReadable(z, c.Node) && serviceReadable(z, c.ServiceName)
}

// intentionReadable: either end's intention:read shows the whole
// intention, as in Consul, so that both sides can see why a connection
// is allowed or not.
func intentionReadable(z *acl.Authorizer, ixn *discovery.Intention) bool {
	return z.IntentionRead(ixn.SourceName) == nil || z.IntentionRead(ixn.DestinationName) == nil
}

func configEntryReadable(z *acl.Authorizer, e *discovery.ConfigEntry) bool {
	return discovery.AuthorizeConfigEntryRead(z, e.Kind, e.Name) == nil
}
