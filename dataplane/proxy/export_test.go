package proxy

// FdsPerConnection is fdsPerConnection, for the external tests.
const FdsPerConnection = fdsPerConnection
