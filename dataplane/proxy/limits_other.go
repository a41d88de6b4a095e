//go:build !unix

package proxy

// openFileLimit: no RLIMIT_NOFILE here; the default is the upper bound.
func openFileLimit() (uint64, bool) { return 0, false }
