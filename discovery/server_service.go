package discovery

// ServerServiceName is the service every server registers for itself on
// its node, at its cluster port, as Consul's servers register "consul"
// (catalog.Service("consul") finds the servers). The name is the servers':
// a registration of it is refused. The data plane leaves it out
// (MeshState) and it gets no VIP: it is not a mesh service.
const ServerServiceName = "consul"

// SourceServer is the Source of a server's own ServerServiceName instance.
const SourceServer = "vmesh:server"

// IsServerService says whether in is a server's own registration of
// ServerServiceName.
func (in *Instance) IsServerService() bool {
	return in.Source == SourceServer && in.Service == ServerServiceName
}

// ServerServiceRequest is the registration of a server's own
// ServerServiceName instance on node, at its cluster port.
func ServerServiceRequest(node string, port int) RegisterServiceRequest {
	return RegisterServiceRequest{Instance: Instance{
		Node: node, ID: ServerServiceName, Service: ServerServiceName, Port: port,
		Meta: map[string]string{}, Weights: Weights{Passing: 1, Warning: 1}, Source: SourceServer,
	}}
}

// Locality is where an instance runs, as Consul's service Locality: kept
// and served as registered; vmesh does not route by it.
type Locality struct {
	Region string `json:",omitempty"`
	Zone   string `json:",omitempty"`
}
