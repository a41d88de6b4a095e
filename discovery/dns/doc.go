// Package dns serves the catalog over DNS, as Consul's agent does, so that
// a host can point its resolver at the agent: `<svc>.mesh` and
// `<svc>.virtual.consul` answer a service's VIP, `<svc>.service.consul` its
// instances (A/AAAA/SRV), `<node>.node.consul` a node; every other name is
// forwarded to the host's recursors.
//
// Data enters only as reads of a *discovery.Store (the local replica) and
// DNS queries on the sockets Server listens on; it leaves as DNS answers.
// The package never writes the catalog and knows nothing of raft, HTTP or
// the agent: package mesh builds a Config from the agent's settings and
// supervises Server's Start/Close.
//
// miekg/dns is imported as mdns so that this package's own name stays
// dns; no other vmesh package needs to link it.
package dns
