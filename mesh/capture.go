package mesh

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vmesh/vmesh/dataplane/xds"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/iptables"
	"github.com/vmesh/vmesh/mesh/config"
)

// Capture in the agent (`capture { enabled = true }` or -capture): the
// kernel state is a pure function of the mesh view the agent's xDS server
// builds (xds.View.Capture -> iptables.StateFor), so rules and proxy never
// disagree; an iptables.Reconciler applies it when the view changes and
// repairs drift every reconcile_interval. It is the last part to start
// (after the proxy) and the first to stop; leave removes it too. The rules
// come from the same builder as `vmesh redirect apply -config`
// (Config.CaptureDesired).

// captureTargets is what capture steers for node in view v; inbound says
// the proxy serves the inbound capture listener.
func captureTargets(v *xds.View, node string, inbound bool) iptables.Targets {
	ct := v.Capture(node)
	t := iptables.Targets{VIPs: ct.VIPs, Inbound: inbound}
	for _, u := range ct.Users {
		t.Users = append(t.Users, iptables.UserTarget{User: u.User, Service: u.Service, Port: u.Port})
	}
	return t
}

// prepareCapture builds the desired state and checks it against the
// host's routes. It changes nothing: a bad capture block fails the start
// as a configuration error before the kernel is touched. The service
// files' users are checked too (checkServiceFiles read them).
func (a *Agent) prepareCapture(context.Context) error {
	files := a.startFiles
	if !a.cfg.Capture.Enabled {
		return nil
	}
	d, err := a.cfg.CaptureDesired()
	if err != nil {
		return &config.Error{Err: err}
	}
	nl, err := iptables.NewNetlink()
	if err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	if err := a.checkFileUsers(d, files); err != nil {
		nl.Close()
		return &config.Error{Err: err}
	}
	logger := a.logger.With("component", "capture")
	c := iptables.New(iptables.ExecRunner{}, iptables.Options{Links: nl, Backend: a.cfg.Capture.Backend, Logger: logger})
	if err := c.Check(d); err != nil {
		nl.Close()
		if errors.Is(err, iptables.ErrInvalid) {
			return &config.Error{Err: err}
		}
		return fmt.Errorf("capture: %w", err)
	}
	r := iptables.NewReconciler(c, nl, d, discovery.LookupUser, logger)
	if a.cfg.Capture.ReconcileInterval > 0 {
		r.Interval = a.cfg.Capture.ReconcileInterval
	}
	a.capture, a.captureLinks = r, nl
	return nil
}

// inboundServing says whether the in-process proxy has the inbound
// capture listener bound: capture redirects inbound_ports only then
// (iptables.Targets.Inbound), so they never go to a port nobody listens
// on, at start, while the listener's certificates warm, or after a NACK.
func (a *Agent) inboundServing() bool {
	if a.proxy == nil {
		return false
	}
	_, ok := a.proxy.ListenerAddrs()[xds.InboundCaptureListener]
	return ok
}

// listenersChanged is closed when the proxy's bound listeners change (nil
// without the in-process proxy: never).
func (a *Agent) listenersChanged() <-chan struct{} {
	if a.proxy == nil {
		return nil
	}
	return a.proxy.ListenersChanged()
}

// startCapture applies the state of the xDS server's current view once,
// then follows its views and the proxy's listeners; it is the last part
// to start, so READY=1 (sent after Start) comes after capture, and the
// proxy it steers traffic to runs.
func (a *Agent) startCapture(ctx context.Context) error {
	if a.capture == nil {
		return nil
	}
	views := a.xds.server.Watch()
	changed := a.listenersChanged() // before looking, so no change is missed
	view := <-views
	first := captureTargets(view, a.cfg.NodeName, a.inboundServing())
	if _, err := a.capture.Reconcile(ctx, first); err != nil {
		return fmt.Errorf("applying capture: %w", err)
	}
	a.stopCaptureLoop = a.life.goLoop("capture", func(ctx context.Context) error {
		a.followViews(ctx, first, view, changed, views)
		return nil
	})
	return nil
}

// followViews runs the reconciler on the capture targets of each new view
// and of each change of the proxy's listeners until ctx ends. The
// one-slot channel between them keeps only the newest targets.
func (a *Agent) followViews(ctx context.Context, first iptables.Targets, view *xds.View, changed <-chan struct{}, views <-chan *xds.View) {
	r, node := a.capture, a.cfg.NodeName
	targets := make(chan iptables.Targets, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx, first, targets)
	}()
	defer func() { <-done }()
	hostService := a.noteHostService("", view)
	for {
		select {
		case <-ctx.Done():
			return
		case view = <-views:
			hostService = a.noteHostService(hostService, view)
		case <-changed:
			changed = a.listenersChanged()
		}
		t := captureTargets(view, node, a.inboundServing())
		select { // replace targets Run has not taken yet
		case <-targets:
		default:
		}
		targets <- t
	}
}

// noteHostService logs when the service this host's unattributed traffic
// speaks for changes, and warns when the configured default_service is
// not registered here (its traffic then keeps the node's identity). It
// returns the service for the next call.
func (a *Agent) noteHostService(prev string, v *xds.View) string {
	cur := v.HostService(a.cfg.NodeName)
	want := a.cfg.Capture.DefaultService
	switch {
	case cur == prev:
	case cur != "":
		a.logger.Info("captured traffic that no service user opened speaks for this service", "component", "capture", "service", cur)
	case want != "":
		a.logger.Warn("capture.default_service is not registered on this host; captured traffic keeps the node's identity", "component", "capture", "default_service", want)
	default:
		a.logger.Info("captured traffic that no service user opened keeps the node's identity", "component", "capture")
	}
	return cur
}

// removeCapture undoes capture (stop, leave); later reconciles do nothing.
func (a *Agent) removeCapture(ctx context.Context) {
	if a.capture == nil {
		return
	}
	if err := a.capture.Remove(ctx); err != nil {
		a.logger.Error("removing capture; run 'vmesh redirect remove' as root", "err", err)
	}
}

// stopCapture ends the reconcile loop and removes the rules and VIPs:
// the first thing a stop does, so no traffic is steered into a proxy
// that is going away.
func (a *Agent) stopCapture() error {
	if a.capture == nil {
		return nil
	}
	if a.stopCaptureLoop != nil {
		a.stopCaptureLoop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a.removeCapture(ctx)
	return nil
}

// closeCaptureLinks closes the netlink handle prepareCapture opened.
func (a *Agent) closeCaptureLinks() error {
	if a.captureLinks != nil {
		a.captureLinks.Close()
	}
	return nil
}

func (a *Agent) captureBanner() {
	if a.out == nil {
		return
	}
	if a.capture == nil {
		fmt.Fprintf(a.out, "        Capture: off\n")
		return
	}
	n, users := a.capture.Status()
	fmt.Fprintf(a.out, "        Capture: on (%s, %d VIPs on %s, %d service users)\n", a.capture.Base().VIPRanges, n, iptables.VIPLink, users)
	if ports := a.capture.Base().InboundPorts; len(ports) > 0 {
		mode := a.cfg.Capture.InboundMode
		if mode == "" {
			mode = config.InboundStrict
		}
		fmt.Fprintf(a.out, "        Inbound: ports %v -> %d (%s), once the proxy serves it\n", ports, a.capture.Base().InboundPort, mode)
	}
}

// checkFileUsers refuses, before anything touches the kernel, a service
// file whose user capture could not redirect: one in exclude_uids (whose
// traffic is never captured), or whose port would clash. The files' own
// checks (the user exists, one service per user) ran when they were read.
func (a *Agent) checkFileUsers(d iptables.Desired, reqs []*discovery.RegisterServiceRequest) error {
	var insts []*discovery.Instance
	where := map[string]string{}
	for _, req := range reqs {
		if req.Instance.User != "" {
			in := req.Instance
			insts = append(insts, &in)
			if _, ok := where[in.User]; !ok {
				where[in.User] = strings.TrimPrefix(in.Source, "file:")
			}
		}
	}
	var errs []error
	for _, u := range a.xdsOpts.UserPorts(a.cfg.NodeName, insts) {
		uid, err := discovery.LookupUser(u.User)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: service %q: user: %w", where[u.User], u.Service, err))
			continue
		}
		if slices.Contains(d.ExcludeUIDs, uid) {
			errs = append(errs, fmt.Errorf("%s: service %q: user: %q (UID %d) is also in capture.exclude_uids, whose traffic is never captured",
				where[u.User], u.Service, u.User, uid))
			continue
		}
		d.Users = append(d.Users, iptables.UserRedirect{UID: uid, Port: u.Port, Service: u.Service})
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return d.Validate()
}

// proxyMark is the SO_MARK the in-process proxy sets on the sockets it
// dials when this agent applies capture: the rules return marked traffic
// first, which keeps the proxy's own connections (to peers, to local
// apps, passed-through original destinations) out of capture without a
// special UID. 0 (no mark) without capture: setting one needs
// CAP_NET_ADMIN, which an agent without capture may lack.
func (a *Agent) proxyMark() int {
	if a.capture == nil {
		return 0
	}
	return int(a.capture.Base().ProxyMark)
}
