//go:build !linux

package iptables

import "net/netip"

// Netlink needs Linux; elsewhere every method fails with ErrUnsupported.
type Netlink struct{}

var _ Links = (*Netlink)(nil)

func NewNetlink() (*Netlink, error)          { return nil, ErrUnsupported }
func NewNetlinkAt(string) (*Netlink, error)  { return nil, ErrUnsupported }
func (*Netlink) Close()                      {}
func (*Netlink) SetVIPs([]netip.Addr) error  { return ErrUnsupported }
func (*Netlink) VIPs() ([]netip.Addr, error) { return nil, ErrUnsupported }
func (*Netlink) Remove() error               { return ErrUnsupported }
func (*Netlink) Routes() ([]Route, error)    { return nil, ErrUnsupported }
