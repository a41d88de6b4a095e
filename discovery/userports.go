package discovery

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Per-user outbound ports (docs/capture.md). A node gives each Unix user
// its instances name a port of its own: capture redirects the user's
// connections there (an iptables owner match) and the node's proxy
// listens there with the user's service's identity. The two sides update
// independently, so a port must never pass from one user to another while
// both exist: a connection redirected under the old map could reach the
// new owner's listener and leave with the wrong identity. A user's port is
// therefore chosen once, when its instance is registered on its own agent
// (UserPortAllocator.Assign, under the agent's registration lock), stored
// on the instance (Instance.UserPort), and kept for as long as an instance
// of that user exists. Ports reads the stored ports back; both the xDS
// server and the capture reconciler call it on the same catalog.

// DefaultUserPortBase is the first per-user outbound port.
const DefaultUserPortBase = 15100

// UserPort is the outbound port of one Unix user of a node: its captured
// connections leave with Service's identity.
type UserPort struct {
	User    string // as the registration spells it (a name or a UID)
	Service string // the service key (the lower-cased name)
	Port    int
}

// UserPortPolicy says where a node's per-user ports come from: Base
// (0: DefaultUserPortBase) up to 65535, never one of Reserved (the
// proxy's outbound and mesh ports, the agent's own ports) nor a port an
// upstream of the node binds.
type UserPortPolicy struct {
	Base     int
	Reserved []int
}

func (p UserPortPolicy) base() int {
	if p.Base == 0 {
		return DefaultUserPortBase
	}
	return p.Base
}

// userOf is what Ports knows of one user of the node.
type userOf struct {
	name    string
	service string // key of the service that owns the user
	idx     uint64 // CreateIndex of the user's first instance
	// stored is the port stored on the owning service's earliest
	// instance that has one (0: none, an instance stored before ports
	// were stored).
	stored   int
	storedAt uint64
	storedID string
}

// Ports gives every user that node's instances name its port:
//
//   - a user whose instances carry a stored port (Instance.UserPort) keeps
//     it. Should two users store the same port (only a write racing a
//     lost raft leadership can do that), the user registered first keeps
//     it; a stored port the policy now reserves (the agent's ports changed,
//     or an upstream took it behind the API's back) is not used either;
//   - users without a usable stored port (instances written before ports
//     were stored) then get the lowest free ports from Base up, in the
//     order their first instance was registered (CreateIndex, then name).
//     They never move a stored port, but may move among themselves; they
//     get a stored port of their own on their next registration (the
//     agent re-registers file-defined services on start).
//
// A user named by instances of two services (registration refuses that,
// but a catalog may hold it) belongs to the first registered. The result
// is sorted by registration order and does not depend on insts' order.
func (p UserPortPolicy) Ports(node string, insts []*Instance) []UserPort {
	reserved := map[int]bool{}
	for _, r := range p.Reserved {
		reserved[r] = true
	}
	byUser := map[string]*userOf{}
	var mine []*Instance
	for _, in := range insts {
		if in.Node != node {
			continue
		}
		mine = append(mine, in)
		for _, u := range in.Upstreams {
			reserved[u.LocalBindPort] = true
		}
		k := strings.ToLower(in.Service)
		if in.User == "" || k == "" {
			continue
		}
		u := byUser[in.User]
		if u == nil {
			u = &userOf{name: in.User, service: k, idx: in.CreateIndex}
			byUser[in.User] = u
		} else if in.CreateIndex < u.idx || in.CreateIndex == u.idx && k < u.service {
			u.service, u.idx = k, in.CreateIndex
		}
	}
	// The stored port of the owning service's earliest instance that has
	// one (a second pass: ownership is settled only now).
	for _, in := range mine {
		u := byUser[in.User]
		if in.User == "" || in.UserPort == 0 || u == nil || strings.ToLower(in.Service) != u.service {
			continue
		}
		if u.stored == 0 || in.CreateIndex < u.storedAt || in.CreateIndex == u.storedAt && in.ID < u.storedID {
			u.stored, u.storedAt, u.storedID = in.UserPort, in.CreateIndex, in.ID
		}
	}
	users := make([]*userOf, 0, len(byUser))
	for _, u := range byUser {
		users = append(users, u)
	}
	slices.SortFunc(users, func(a, b *userOf) int { return cmp.Or(cmp.Compare(a.idx, b.idx), cmp.Compare(a.name, b.name)) })

	port := map[string]int{}
	taken := map[int]bool{}
	for _, u := range users {
		if s := u.stored; s > 0 && s <= 65535 && !reserved[s] && !taken[s] {
			port[u.name], taken[s] = s, true
		}
	}
	next := p.base()
	for _, u := range users {
		if port[u.name] != 0 {
			continue
		}
		for next <= 65535 && (reserved[next] || taken[next]) {
			next++
		}
		if next > 65535 {
			continue // the range is full: no port, no listener, no rule
		}
		port[u.name], taken[next] = next, true
	}
	var out []UserPort
	for _, u := range users {
		if n := port[u.name]; n != 0 {
			out = append(out, UserPort{User: u.name, Service: u.service, Port: n})
		}
	}
	return out
}

// UserPortAllocator serializes the registrations of a node's instances on
// its own agent (the HTTP API and service files both take Lock) and
// chooses the per-user port of each one (Assign). Serializing is what
// makes the choice race-free: Assign reads the catalog, and the write that
// follows is applied to this agent's catalog (raft.Server.Apply returns
// once it is) before the lock is released, so the next Assign sees it.
//
// Why here and not in the FSM: the policy (Base, the agent's reserved
// ports) is the agent's configuration, which other nodes' FSMs do not
// have, and a refusal decided by the FSM would diverge between agents of
// different versions during a rolling upgrade. Each node's instances are
// registered only by its own agent, so its lock covers all of them.
type UserPortAllocator struct {
	Policy UserPortPolicy
	mu     sync.Mutex
}

// Lock starts a registration: hold it from the checks that read the
// catalog until the write is applied.
func (a *UserPortAllocator) Lock() { a.mu.Lock() }

// Unlock ends a registration.
func (a *UserPortAllocator) Unlock() { a.mu.Unlock() }

// Assign sets req.Instance.UserPort and checks req's upstreams against the
// ports the node's users hold; the caller holds Lock. The instance's port
// is:
//
//   - the port its user already has (another instance of its service, or
//     this instance's earlier registration, stored or, for an entry
//     written before ports were stored, computed): a re-registration and
//     a second instance never move it;
//   - otherwise the lowest port from Policy.Base up that no other user of
//     the node holds and that is not reserved (Policy.Reserved, every
//     upstream port of the node, this registration's included, and avoid:
//     ports about to be bound, such as the upstreams of service files
//     registered in the same pass).
//
// An upstream whose LocalBindPort is a user's port is refused (the user
// is not moved to make room); the error names the field and wraps
// ErrInvalid. An instance without a user gets UserPort 0.
func (a *UserPortAllocator) Assign(st *Store, req *RegisterServiceRequest, avoid ...int) error {
	in := &req.Instance
	_, existing, err := st.NodeInstances(nil, in.Node)
	if err != nil {
		return fmt.Errorf("reading node %q's instances: %w", in.Node, err)
	}
	// The ports as they are now (Ports over the catalog, this instance's
	// earlier registration included), so that a user without a stored port
	// keeps the port it has, and nothing moves.
	named := map[string]bool{} // users the node's other instances name
	var others []*Instance
	for _, e := range existing {
		if e.ID != in.ID {
			named[e.User] = true
			others = append(others, e)
		}
	}
	held := map[int]UserPort{}
	own := 0
	for _, u := range a.Policy.Ports(in.Node, existing) {
		if in.User != "" && u.User == in.User {
			own = u.Port // a sibling's, or this instance's own
		} else {
			// A port this registration releases (the instance's user
			// changes) is not given to another user now either: a rule
			// for the old user may still point there.
			held[u.Port] = u
		}
	}
	if own != 0 {
		held[own] = UserPort{User: in.User, Service: strings.ToLower(in.Service), Port: own}
	}
	for i, up := range in.Upstreams {
		if u, ok := held[up.LocalBindPort]; ok && (named[u.User] || u.User == in.User) {
			return fmt.Errorf("%w: Connect.SidecarService.Proxy.Upstreams[%d].LocalBindPort: port %d is the per-user outbound port of user %q (service %q) on this node; pick another port",
				ErrInvalid, i, up.LocalBindPort, u.User, u.Service)
		}
	}
	in.UserPort = 0
	if in.User == "" {
		return nil
	}
	if own == 0 {
		reserved := map[int]bool{}
		for _, r := range slices.Concat(a.Policy.Reserved, avoid) {
			reserved[r] = true
		}
		for _, o := range append(others, in) {
			for _, up := range o.Upstreams {
				reserved[up.LocalBindPort] = true
			}
		}
		for p := a.Policy.base(); p <= 65535; p++ {
			if !reserved[p] && held[p].User == "" {
				own = p
				break
			}
		}
		if own == 0 {
			return fmt.Errorf("%w: Meta.%s: no per-user outbound port is free from %d to 65535 on this node", ErrInvalid, MetaUser, a.Policy.base())
		}
	}
	in.UserPort = own
	return nil
}
