// Package xds will translate a catalog view into Envoy xDS resources (a pure
// function, golden-tested) and serve them with go-control-plane. It reads
// the discovery catalog and never writes it. Not built yet.
package xds
