package systemd

import "errors"

// Errors of this package.
var (
	// ErrUnsupported: installing a systemd unit needs Linux.
	ErrUnsupported = errors.New("systemd: vmesh install and uninstall need Linux with systemd (use --dry-run or --prefix elsewhere)")
	// ErrUnitOptions: a binary path, config path, user or watchdog the
	// unit cannot carry.
	ErrUnitOptions = errors.New("systemd: bad unit options")
)
