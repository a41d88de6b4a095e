// Package iptables owns traffic capture on the host: the rules that steer
// connections into the local proxy, and the vmesh0 interface that holds the
// service VIPs.
//
// Rules (rules.go) is a pure function from Desired to iptables-restore
// scripts. Capture applies them atomically (one iptables-restore --noflush
// transaction per family), removes exactly what it added and shows it,
// reading iptables-save first every time so that it converges from any
// earlier state — a crash, a restart, an admin's edit. It works with both
// iptables-nft and iptables-legacy. Desired.Validate and CheckRoutes refuse
// bad input, naming the field, before the kernel is touched.
//
// Every side effect goes through a small interface with a fake that keeps
// state as text: Runner (exec, each command under a timeout; Fake models
// iptables-save/restore) and Links (netlink: vmesh0 and routes; FakeLinks).
// Netlink and OriginalDst are Linux-only (_linux.go) and fail with
// ErrUnsupported elsewhere.
//
// This package must not touch any chain that is not ours (VMESH_*) except to
// insert and delete our jumps, and must not know about the catalog: the
// caller (mesh, `vmesh redirect`) builds Desired and the VIP list. See
// docs/capture.md.
package iptables
