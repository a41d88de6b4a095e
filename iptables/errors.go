package iptables

import "errors"

// Errors of this package.
var (
	// ErrUnsupported: capture needs Linux (netfilter, netlink, SO_ORIGINAL_DST).
	ErrUnsupported = errors.New("iptables: traffic capture needs Linux")
	// ErrInvalid: a Desired that cannot be applied; the wrapped errors name
	// each bad field. Returned before anything touches the kernel.
	ErrInvalid = errors.New("iptables: invalid capture settings")
	// ErrNoIptables: neither iptables-nft nor iptables-legacy (nor a plain
	// iptables) was found on PATH.
	ErrNoIptables = errors.New("iptables: no iptables binary found (install the iptables package)")
)
