package iptables

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// Links is the netlink side of capture: the vmesh0 interface holding the
// service VIPs, and the host's routes (to refuse an overlapping VIP range).
// Netlink is the real one (Linux), FakeLinks records state as text.
type Links interface {
	// SetVIPs makes vmesh0 hold exactly ips (each a /32 or /128),
	// creating the link and bringing it up if needed.
	SetVIPs(ips []netip.Addr) error
	// VIPs returns the addresses on vmesh0; none when it is absent.
	VIPs() ([]netip.Addr, error)
	// Remove deletes vmesh0; no-op when it is absent.
	Remove() error
	// Routes lists the host's routes in every table.
	Routes() ([]Route, error)
}

// FakeLinks is a Links in memory.
type FakeLinks struct {
	mu     sync.Mutex
	up     bool
	addrs  []netip.Addr
	routes []Route
	// Err, when set, is returned by every call.
	Err error
}

var _ Links = (*FakeLinks)(nil)

// NewFakeLinks returns a host with the given routes and no vmesh0.
func NewFakeLinks(routes ...Route) *FakeLinks { return &FakeLinks{routes: routes} }

func (f *FakeLinks) SetVIPs(ips []netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return f.Err
	}
	for _, ip := range ips {
		if !ip.IsValid() {
			return fmt.Errorf("setting VIPs: invalid address")
		}
	}
	f.up = true
	f.addrs = slices.Clone(ips)
	slices.SortFunc(f.addrs, netip.Addr.Compare)
	f.addrs = slices.Compact(f.addrs)
	return nil
}

func (f *FakeLinks) VIPs() ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.addrs), f.Err
}

func (f *FakeLinks) Remove() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return f.Err
	}
	f.up, f.addrs = false, nil
	return nil
}

func (f *FakeLinks) Routes() ([]Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.routes), f.Err
}

// State is the fake's vmesh0 as text: "vmesh0 up 240.0.0.1/32 ..." or
// "no vmesh0".
func (f *FakeLinks) State() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.up {
		return "no " + VIPLink
	}
	parts := []string{VIPLink, "up"}
	for _, a := range f.addrs {
		parts = append(parts, netip.PrefixFrom(a, a.BitLen()).String())
	}
	return strings.Join(parts, " ")
}
