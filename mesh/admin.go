package mesh

import (
	"net/http"
	"sync/atomic"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"github.com/vmesh/vmesh/dataplane/admin"
	"github.com/vmesh/vmesh/dataplane/proxy"
	"github.com/vmesh/vmesh/mesh/cli"
)

// adminHandler is the admin listener's: Envoy's admin endpoints over the
// in-process proxy (dataplane/admin), the agent's metrics, and the xDS
// server's own view of what it sends (/xds/config_dump, and the clients
// it serves).
func (a *Agent) adminHandler() http.Handler {
	b := cli.Build()
	cfg := admin.Config{
		Gatherer:   a.gatherer(),
		Prometheus: a.metricsHandler(),
		Level:      a.logLevel,
		Version:    "vmesh/" + b.Version + "/" + b.ShortRevision() + "/" + b.GoVersion,
		Build:      b,
		Node:       map[string]string{"id": a.cfg.NodeName, "datacenter": a.cfg.Datacenter},
		Args:       a.args,
		Started:    a.started,
		Logger:     a.logger.With("component", "admin"),
		Extra: map[string]http.Handler{
			"GET /xds/config_dump":      a.xds.server.ConfigDumpHandler(),
			"GET /v1/vmesh/xds/clients": a.xds.server.ClientsHandler(),
		},
	}
	if a.cfg.Proxy.Enabled {
		cfg.Proxy = &a.adminProxy
	}
	return admin.Handler(cfg)
}

// adminProxy is the in-process proxy once it is created (the admin
// listener starts before it): until then it is PRE_INITIALIZING with
// nothing to show.
type adminProxy struct{ p atomic.Pointer[proxy.Proxy] }

func (ap *adminProxy) State() string {
	if p := ap.p.Load(); p != nil {
		return p.State()
	}
	return proxy.StatePreInitializing
}

func (ap *adminProxy) NodeID() string {
	if p := ap.p.Load(); p != nil {
		return p.NodeID()
	}
	return ""
}

func (ap *adminProxy) Listeners() []proxy.ListenerStatus {
	if p := ap.p.Load(); p != nil {
		return p.Listeners()
	}
	return nil
}

func (ap *adminProxy) Clusters() []proxy.ClusterStatus {
	if p := ap.p.Load(); p != nil {
		return p.Clusters()
	}
	return nil
}

func (ap *adminProxy) ConfigDump() *adminv3.ConfigDump {
	if p := ap.p.Load(); p != nil {
		return p.ConfigDump()
	}
	return &adminv3.ConfigDump{}
}
