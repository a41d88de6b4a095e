// Package dataplane groups the data plane: xds (catalog view to Envoy xDS
// resources, and the xDS server), proxy (the in-process proxy, fed only by
// xDS) and metrics (the Prometheus registration both share, a leaf).
package dataplane
