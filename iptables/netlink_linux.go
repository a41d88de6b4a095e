package iptables

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Netlink manages vmesh0 and reads routes through rtnetlink.
type Netlink struct {
	h *netlink.Handle
}

var _ Links = (*Netlink)(nil)

// NewNetlink works in the calling process's network namespace.
func NewNetlink() (*Netlink, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("opening netlink: %w", err)
	}
	return &Netlink{h: h}, nil
}

// NewNetlinkAt works in the network namespace at path (e.g.
// /run/netns/NAME) without the calling thread ever entering it.
func NewNetlinkAt(path string) (*Netlink, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("opening netns %s: %w", path, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("opening netlink in %s: %w", path, err)
	}
	return &Netlink{h: h}, nil
}

// Close releases the netlink sockets.
func (n *Netlink) Close() { n.h.Close() }

// link returns vmesh0, or nil when absent. A vmesh0 of a kind we never
// create is someone else's, and an error.
func (n *Netlink) link() (netlink.Link, error) {
	l, err := n.h.LinkByName(VIPLink)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, nil
		}
		return nil, fmt.Errorf("looking up %s: %w", VIPLink, err)
	}
	if t := l.Type(); t != "dummy" && t != "bridge" {
		return nil, fmt.Errorf("%s exists and is a %s link, not one vmesh made; remove or rename it", VIPLink, t)
	}
	return l, nil
}

func (n *Netlink) SetVIPs(ips []netip.Addr) error {
	want := map[netip.Addr]bool{}
	for _, ip := range ips {
		if !ip.IsValid() {
			return fmt.Errorf("setting VIPs: invalid address")
		}
		want[ip.Unmap()] = true
	}
	l, err := n.link()
	if err != nil {
		return err
	}
	if l == nil {
		attrs := netlink.LinkAttrs{Name: VIPLink}
		err := n.h.LinkAdd(&netlink.Dummy{LinkAttrs: attrs})
		if errors.Is(err, unix.EOPNOTSUPP) {
			// A kernel without the dummy driver (CONFIG_DUMMY unset): a
			// bridge with no ports holds local addresses just as well.
			err = n.h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs})
		}
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("creating %s: %w", VIPLink, err)
		}
		if l, err = n.link(); err != nil {
			return err
		}
		if l == nil {
			return fmt.Errorf("creating %s: link did not appear", VIPLink)
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := n.h.LinkSetUp(l); err != nil {
			return fmt.Errorf("bringing %s up: %w", VIPLink, err)
		}
	}
	have, err := n.h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("listing %s addresses: %w", VIPLink, err)
	}
	for _, a := range have {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		ones, _ := a.Mask.Size()
		if ip.IsLinkLocalUnicast() { // the kernel's own fe80::
			continue
		}
		if want[ip] && ones == ip.BitLen() {
			delete(want, ip)
			continue
		}
		if err := n.h.AddrDel(l, &a); err != nil {
			return fmt.Errorf("removing %s from %s: %w", ip, VIPLink, err)
		}
	}
	add := make([]netip.Addr, 0, len(want))
	for ip := range want {
		add = append(add, ip)
	}
	slices.SortFunc(add, netip.Addr.Compare)
	for _, ip := range add {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(ip.BitLen(), ip.BitLen())}}
		if ip.Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := n.h.AddrAdd(l, a); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("adding %s to %s: %w", ip, VIPLink, err)
		}
	}
	return nil
}

func (n *Netlink) VIPs() ([]netip.Addr, error) {
	l, err := n.link()
	if err != nil || l == nil {
		return nil, err
	}
	have, err := n.h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing %s addresses: %w", VIPLink, err)
	}
	var out []netip.Addr
	for _, a := range have {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && !ip.Unmap().IsLinkLocalUnicast() {
			out = append(out, ip.Unmap())
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}

func (n *Netlink) Remove() error {
	l, err := n.link()
	if err != nil || l == nil {
		return err
	}
	if err := n.h.LinkDel(l); err != nil {
		return fmt.Errorf("deleting %s: %w", VIPLink, err)
	}
	return nil
}

func (n *Netlink) Routes() ([]Route, error) {
	rs, err := n.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	names := map[int]string{}
	var out []Route
	for _, r := range rs {
		if r.Dst == nil {
			continue // a default route
		}
		ip, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		dev, ok := names[r.LinkIndex]
		if !ok && r.LinkIndex > 0 {
			if l, err := n.h.LinkByIndex(r.LinkIndex); err == nil {
				dev = l.Attrs().Name
			}
			names[r.LinkIndex] = dev
		}
		out = append(out, Route{Dst: netip.PrefixFrom(ip.Unmap(), ones), Dev: dev})
	}
	return out, nil
}
