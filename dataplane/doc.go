// Package dataplane groups the data plane: xds (catalog view to Envoy xDS
// resources, and the xDS server) and proxy (the in-process proxy, fed only
// by xDS; not built yet, see the open issues).
package dataplane
