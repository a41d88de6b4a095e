//go:build !linux

package proxy

import "os"

// openBeneath opens rel beneath dir: without openat2, by openChecked.
func openBeneath(dir, rel string) (*os.File, error) { return openChecked(dir, rel) }
