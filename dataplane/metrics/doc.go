// Package metrics holds what the xDS server and the proxy share about
// Prometheus registration, so it is written once. It is a leaf: it imports
// only the Prometheus client, never another vmesh package, which is what
// lets dataplane/proxy use it and still import nothing of vmesh but xDS
// types.
package metrics
