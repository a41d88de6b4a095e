package proxy

import (
	"sync/atomic"
	"time"
)

// Downstream connection limits: the proxy shares the agent's process, and
// so its file descriptors, with raft, the HTTP API, DNS and the xDS
// server. A flood of connections to one listener must neither starve the
// others nor take the descriptors the agent itself needs. A connection
// over a limit is closed as soon as it is accepted (a reset) and counted
// in vmesh_connections_refused_total.

// Bounds of DefaultMaxConnections.
const (
	// fdReserve is what the agent keeps for itself (raft, the API, DNS,
	// xDS, checks, files) out of its descriptor limit; at most half of
	// the limit.
	fdReserve = 1024
	// minConnections and maxConnections bound the default whatever the
	// descriptor limit says.
	minConnections = 64
	maxConnections = 1 << 20
)

// fdsPerConnection is what one proxied connection may hold at worst: its
// socket, the upstream's, and, while the bytes of a plaintext TCP
// connection are spliced (Go's io.Copy between two TCP sockets uses
// splice(2)), a pipe (two descriptors) for each direction.
const fdsPerConnection = 6

// DefaultMaxConnections is the proxy's default limit on downstream
// connections, from the process's open file limit (RLIMIT_NOFILE, which
// Go raises to its hard limit at start): what the agent does not keep
// for itself (1,024 descriptors, at most half), divided by what a
// connection may hold (fdsPerConnection).
func DefaultMaxConnections() int {
	n, ok := openFileLimit()
	if !ok {
		return maxConnections
	}
	return connectionsFor(n)
}

// connectionsFor is DefaultMaxConnections for an open file limit of n.
func connectionsFor(n uint64) int {
	reserve := min(uint64(fdReserve), n/2)
	return int(min(max((n-reserve)/fdsPerConnection, minConnections), maxConnections))
}

// connLimits counts downstream connections against the limits.
type connLimits struct {
	global, perListener int64
	active              atomic.Int64
	// lastWarn is when a refusal was last logged (unix nanoseconds).
	lastWarn atomic.Int64
}

// admit takes a slot for a new connection of a listener that holds n;
// limit names the limit that refused it ("" when admitted).
func (l *connLimits) admit(n int) (limit string) {
	if int64(n) >= l.perListener {
		return "listener"
	}
	if l.active.Add(1) > l.global {
		l.active.Add(-1)
		return "global"
	}
	return ""
}

func (l *connLimits) release() { l.active.Add(-1) }

// warnDue reports whether a refusal should be logged: once every 10 s at
// most, so a flood does not flood the log.
func (l *connLimits) warnDue(now time.Time) bool {
	last := l.lastWarn.Load()
	return now.UnixNano()-last >= int64(10*time.Second) && l.lastWarn.CompareAndSwap(last, now.UnixNano())
}
