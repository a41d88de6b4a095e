//go:build !linux

package systemd

// checkHost: useradd and systemctl exist only on Linux.
func checkHost() error { return ErrUnsupported }
