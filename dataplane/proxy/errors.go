package proxy

import "errors"

// Errors of the proxy. A NACK's error detail wraps ErrUnsupported or
// ErrInvalid and names the resource and the field.
var (
	// ErrUnsupported: the config uses a feature this proxy does not
	// implement (yet); it is refused rather than ignored.
	ErrUnsupported = errors.New("proxy: unsupported")
	// ErrInvalid: the config is malformed or inconsistent.
	ErrInvalid = errors.New("proxy: invalid config")
)
