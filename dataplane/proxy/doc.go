// Package proxy will be the in-process proxy. It learns its whole
// configuration from an xDS stream and imports nothing of vmesh but xDS
// types, so Envoy can replace it. Not built yet.
package proxy
