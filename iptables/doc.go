// Package iptables will own traffic capture: a pure function from desired
// state to an iptables-restore script, its atomic apply and exact cleanup,
// and the vmesh0 dummy interface that holds service VIPs (netlink). Kernel
// side effects will sit behind a small interface with a fake. Not built yet.
package iptables
