package xds

import "errors"

// Sentinel errors.
var (
	// ErrTranslate: the catalog holds something that cannot be expressed
	// as xDS (for example a name that is not valid UTF-8).
	ErrTranslate = errors.New("xds: cannot translate the catalog")
	// ErrInconsistent: a snapshot failed Check.
	ErrInconsistent = errors.New("xds: inconsistent snapshot")
)
