package metrics

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers c with reg, or returns the collector already
// registered there under the same name and labels, so a component started
// twice in one process (a restarted proxy, several agents in a test)
// keeps counting on the first one's series. Any other failure is a
// programming error (two different metrics under one name), hence the
// panic; component names which caller it was.
func Register[C prometheus.Collector](component string, reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	panic(fmt.Sprintf("%s: registering metrics: %v", component, err))
}
