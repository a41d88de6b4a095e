package proxy

import (
	"math"
	"testing"
)

// TestDefaultMaxConnections: the agent keeps 1,024 descriptors (at most
// half) and every proxied connection may take six of the rest.
func TestDefaultMaxConnections(t *testing.T) {
	for _, tc := range []struct {
		nofile uint64
		want   int
	}{
		{1024, 85},
		{4096, 512},
		{8192, 1194},
		{65536, 10752},
		{100, minConnections},
		{math.MaxUint64, maxConnections},
	} {
		if got := connectionsFor(tc.nofile); got != tc.want {
			t.Errorf("RLIMIT_NOFILE %d: %d connections, want %d", tc.nofile, got, tc.want)
		}
	}
	if n := DefaultMaxConnections(); n < minConnections || n > maxConnections {
		t.Errorf("DefaultMaxConnections() = %d", n)
	}
}
