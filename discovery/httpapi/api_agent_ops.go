package httpapi

import (
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
)

// LogMonitor streams the agent's log lines; the agent's log hub is one.
type LogMonitor interface {
	// Subscribe hands out every line logged from now on at level or
	// above, formatted as text or JSON, one line per slice, until
	// cancel; cancel returns how many lines were dropped because the
	// reader was behind.
	Subscribe(level slog.Level, json bool) (lines <-chan []byte, cancel func() (dropped int))
}

// registerAgentOps adds the agent's operational endpoints: log
// streaming (consul monitor), maintenance mode (consul maint) and
// reload (consul reload).
func (a *API) registerAgentOps(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/agent/monitor", a.agentMonitor)
	mux.HandleFunc("PUT /v1/agent/maintenance", a.nodeMaintenance)
	mux.HandleFunc("PUT /v1/agent/service/maintenance/{id}", a.serviceMaintenance)
	mux.HandleFunc("PUT /v1/agent/reload", a.agentReload)
	mux.HandleFunc("PUT /v1/agent/token/{kind}", a.agentToken) // api_agent_token.go
}

// monitorLevel reads ?loglevel= as Consul names levels (trace is
// debug here: vmesh has no lower level); info when absent.
func monitorLevel(r *http.Request) (slog.Level, error) {
	v := r.URL.Query().Get("loglevel")
	switch strings.ToLower(v) {
	case "", "info":
		return slog.LevelInfo, nil
	case "trace", "debug":
		return slog.LevelDebug, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "err", "error":
		return slog.LevelError, nil
	}
	return 0, badRequest("loglevel: unknown log level %q; one of trace, debug, info, warn, error", v)
}

// agentMonitor streams this agent's log lines as they are written, until
// the caller goes away. It needs agent:read on this agent's node, as in
// Consul: logs are the operator's.
func (a *API) agentMonitor(w http.ResponseWriter, r *http.Request) {
	level, err := monitorLevel(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	var jsonOut bool
	if v, ok := r.URL.Query()["logjson"]; ok && v[0] != "" {
		if jsonOut, err = strconv.ParseBool(v[0]); err != nil {
			a.writeError(w, r, badRequest("logjson: %q is not true or false", v[0]))
			return
		}
	} else {
		jsonOut = ok // ?logjson alone means true, as in Consul
	}
	if _, ok := a.allow(w, r, func(z *acl.Authorizer) error { return z.AgentRead(a.NodeName) }); !ok {
		return
	}
	if a.Monitor == nil {
		a.writeError(w, r, &HTTPError{Code: http.StatusNotImplemented, Msg: "log streaming is not available on this agent"})
		return
	}
	lines, cancel := a.Monitor.Subscribe(level, jsonOut)
	defer func() {
		if n := cancel(); n > 0 && a.Logger != nil {
			a.Logger.Warn("monitor: dropped log lines the reader was too slow for", "dropped", n)
		}
	}()
	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	if flusher != nil {
		flusher.Flush()
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case line, ok := <-lines:
			if !ok {
				return
			}
			if _, err := w.Write(append(line, '\n')); err != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
	}
}

// maintParams reads ?enable= (required, a bool) and ?reason=, as
// Consul's maintenance endpoints do.
func maintParams(r *http.Request) (enable bool, reason string, err error) {
	q := r.URL.Query()
	v, ok := q["enable"]
	if !ok {
		return false, "", badRequest("Missing value for enable")
	}
	if enable, err = strconv.ParseBool(v[0]); err != nil {
		return false, "", badRequest("Invalid value for enable: %q", v[0])
	}
	return enable, q.Get("reason"), nil
}

// Consul's notes for a maintenance check enabled without a reason.
const (
	defaultNodeMaintReason    = "Maintenance mode is enabled for this node, but no reason was provided. This is a default message."
	defaultServiceMaintReason = "Maintenance mode is enabled for this service, but no reason was provided. This is a default message."
)

// nodeMaintenance puts this agent's node in or out of maintenance: a
// critical _node_maintenance check, which makes every instance on the
// node unhealthy. It needs node:write on the node (the check write's
// own rule). Enabling twice keeps the first reason, as Consul does.
func (a *API) nodeMaintenance(w http.ResponseWriter, r *http.Request) {
	enable, reason, err := maintParams(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if reason == "" {
		reason = defaultNodeMaintReason
	}
	chk := discovery.Check{
		Node: a.NodeName, CheckID: discovery.NodeMaintenanceCheckID, Name: "Node Maintenance Mode",
		Status: discovery.HealthCritical, Notes: reason, Type: discovery.MaintenanceCheckType,
	}
	a.setMaintenance(w, r, enable, chk)
}

// serviceMaintenance puts one of this agent's service instances in or
// out of maintenance: a critical _service_maintenance:<id> check. It
// needs service:write on the instance's service.
func (a *API) serviceMaintenance(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	enable, reason, err := maintParams(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	_, inst, err := a.Store.Instance(nil, a.NodeName, id)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if inst == nil {
		a.writeError(w, r, notFound("Unknown service ID %q", id))
		return
	}
	if reason == "" {
		reason = defaultServiceMaintReason
	}
	chk := discovery.Check{
		Node: a.NodeName, CheckID: discovery.ServiceMaintenanceCheckID(id), Name: "Service Maintenance Mode",
		Status: discovery.HealthCritical, Notes: reason, Type: discovery.MaintenanceCheckType,
		ServiceID: id, ServiceName: inst.Service,
	}
	a.setMaintenance(w, r, enable, chk)
}

// setMaintenance writes or removes a maintenance check; both are no-ops
// when the check already is or is not there (after the ACL check, which
// a.apply asks also of a write it then skips).
func (a *API) setMaintenance(w http.ResponseWriter, r *http.Request, enable bool, chk discovery.Check) {
	_, cur, err := a.Store.Check(nil, a.NodeName, chk.CheckID)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	var cmd discovery.Command = discovery.RegisterCheckRequest{Check: chk}
	if !enable {
		cmd = discovery.DeregisterCheckRequest{Node: a.NodeName, CheckID: chk.CheckID}
	}
	if (cur != nil) == enable {
		// Nothing to write; the caller must still be allowed to.
		if _, ok := a.allow(w, r, func(z *acl.Authorizer) error { return discovery.AuthorizeCommand(z, a.Store, cmd) }); ok {
			w.WriteHeader(http.StatusOK)
		}
		return
	}
	if _, err := a.apply(r, cmd); err != nil {
		a.writeError(w, r, err)
		return
	}
	a.checksWritten()
	w.WriteHeader(http.StatusOK)
}

// agentReload does what SIGHUP does: re-read the config files and the
// service definitions. It needs agent:write on this agent's node, as in
// Consul. A bad file is a 400 naming it, and changes nothing.
func (a *API) agentReload(w http.ResponseWriter, r *http.Request) {
	if _, ok := a.allow(w, r, func(z *acl.Authorizer) error { return z.AgentWrite(a.NodeName) }); !ok {
		return
	}
	if a.Reload == nil {
		a.writeError(w, r, &HTTPError{Code: http.StatusNotImplemented, Msg: "reload is not available on this agent"})
		return
	}
	if err := a.Reload(r.Context()); err != nil {
		if r.Context().Err() == nil {
			err = badRequest("reload failed; the running configuration stays: %v", err)
		}
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}
