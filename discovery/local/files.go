package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/vmesh/vmesh/discovery"
)

// FileDefinition is a service definition read from a file: the
// registration (whose Line is where it starts) and the file, so that every
// check made after reading can name file:line.
type FileDefinition struct {
	File    string
	Service discovery.ServiceRegistration
}

// BuildFileServices validates file definitions into registrations for
// node, as the agent stores them and as `services register` and `validate`
// check them. Errors name file and line; two definitions with one ID, and
// one user for two services, are errors.
func BuildFileServices(node string, defs []FileDefinition) ([]*discovery.RegisterServiceRequest, error) {
	var out []*discovery.RegisterServiceRequest
	var errs []error
	seen := map[string]string{}
	users := fileUsers{}
	for _, fd := range defs {
		def := &fd.Service
		where := fmt.Sprintf("%s:%d", fd.File, def.Line)
		// The protocol travels as Meta.protocol, but a file says protocol:
		// name the key the file used.
		if p := def.Protocol; p != "" {
			if !discovery.ValidProtocol(p) {
				errs = append(errs, fmt.Errorf("%s: service %q: protocol: %q is not one of %s", where, def.Name, p, strings.Join(discovery.Protocols, ", ")))
				continue
			}
			if m := def.Meta[discovery.MetaProtocol]; m != "" && m != p {
				errs = append(errs, fmt.Errorf("%s: service %q: protocol: %q conflicts with meta.protocol %q", where, def.Name, p, m))
				continue
			}
		}
		if u := def.User; u != "" {
			if m := def.Meta[discovery.MetaUser]; m != "" && m != u {
				errs = append(errs, fmt.Errorf("%s: service %q: user: %q conflicts with meta.%s %q", where, def.Name, u, discovery.MetaUser, m))
				continue
			}
			if _, err := discovery.LookupUser(u); err != nil {
				errs = append(errs, fmt.Errorf("%s: service %q: user: %w", where, def.Name, err))
				continue
			}
		}
		req, err := def.ForAPI().Build(node, "file:"+filepath.Clean(fd.File))
		if err != nil {
			msg := strings.TrimPrefix(err.Error(), discovery.ErrInvalid.Error()+": ")
			errs = append(errs, fmt.Errorf("%s: service %q: %s", where, def.Name, strings.ReplaceAll(msg, "\n", "; ")))
			continue
		}
		id := req.Instance.ID
		if prev, dup := seen[id]; dup {
			errs = append(errs, fmt.Errorf("%s: service %q: id: duplicate ID %q (also defined at %s)", where, def.Name, id, prev))
			continue
		}
		if err := users.add(req.Instance, where); err != nil {
			errs = append(errs, fmt.Errorf("%s: service %q: %s: %w", where, def.Name, userKey(def), err))
			continue
		}
		seen[id] = where
		out = append(out, req)
	}
	return out, errors.Join(errs...)
}

// userKey is the key a file used to name the user.
func userKey(d *discovery.ServiceRegistration) string {
	if d.User != "" {
		return "user"
	}
	return "meta." + discovery.MetaUser
}

// fileUsers checks the users of file definitions: each exists on this
// host, and runs one service (its captured connections can carry only one
// identity). Instances of one service may share their user.
type fileUsers map[uint32]fileUser

type fileUser struct{ service, user, where string }

func (fu fileUsers) add(in discovery.Instance, where string) error {
	if in.User == "" {
		return nil
	}
	uid, err := discovery.LookupUser(in.User)
	if err != nil {
		return err
	}
	if prev, ok := fu[uid]; ok && !strings.EqualFold(prev.service, in.Service) {
		same := ""
		if prev.user != in.User {
			same = fmt.Sprintf(" (as %q, the same UID %d)", prev.user, uid)
		}
		return fmt.Errorf("%q already runs service %q%s, defined at %s; one service per user", in.User, prev.service, same, prev.where)
	}
	if _, ok := fu[uid]; !ok {
		fu[uid] = fileUser{service: in.Service, user: in.User, where: where}
	}
	return nil
}

// FileServices keeps the catalog's file-owned instances of one node equal
// to the node's file definitions (at start and on every reload). Services
// registered through the API are left alone.
type FileServices struct {
	Store  *discovery.Store
	Writer discovery.Writer
	Node   string
	// UserPorts is the allocator the node's API registrations share, so a
	// file service and an API one never get the same user port.
	UserPorts *discovery.UserPortAllocator
	Logger    *slog.Logger
}

// Sync makes the catalog hold exactly want (from BuildFileServices): new
// and changed definitions are registered, and file instances whose
// definition is gone are deregistered. Unchanged ones are not rewritten, so
// a reload of the same files writes nothing. Callers serialize Sync.
func (fs *FileServices) Sync(ctx context.Context, want []*discovery.RegisterServiceRequest) error {
	fs.UserPorts.Lock()
	defer fs.UserPorts.Unlock()
	_, have, err := fs.Store.NodeInstances(nil, fs.Node)
	if err != nil {
		return err
	}
	wanted := map[string]bool{}
	avoid := fileUpstreamPorts(want)
	for _, req := range want {
		wanted[req.Instance.ID] = true
		// The user's port (kept from the catalog, or a new one) is part
		// of what must be up to date.
		if skip, err := fs.assignUserPort(req, avoid); skip || err != nil {
			if err != nil {
				return err
			}
			continue
		}
		if fs.upToDate(req) {
			continue
		}
		if _, err := fs.Writer.Apply(ctx, req); err != nil {
			return fmt.Errorf("registering %s from %s: %w", req.Instance.ID, strings.TrimPrefix(req.Instance.Source, "file:"), err)
		}
		fs.Logger.Info("registered service from file", "id", req.Instance.ID, "source", req.Instance.Source)
	}
	for _, in := range have {
		// A sidecar record comes and goes with its service's registration.
		if strings.HasPrefix(in.Source, "file:") && !wanted[in.ID] && in.SidecarFor == "" {
			if _, err := fs.Writer.Apply(ctx, discovery.DeregisterServiceRequest{Node: in.Node, ServiceID: in.ID}); err != nil {
				return fmt.Errorf("deregistering %s: %w", in.ID, err)
			}
			fs.Logger.Info("deregistered service whose definition is gone", "id", in.ID, "source", in.Source)
		}
	}
	return nil
}

// fileUpstreamPorts are the ports the upstreams of file definitions bind:
// a user's new port avoids them, so that which of two files registers
// first does not decide whether an upstream is refused.
func fileUpstreamPorts(reqs []*discovery.RegisterServiceRequest) []int {
	var out []int
	for _, req := range reqs {
		for _, u := range req.Instance.Upstreams {
			out = append(out, u.LocalBindPort)
		}
	}
	return out
}

// assignUserPort gives a file service's user its port (Assign; Sync holds
// the allocator's lock). A definition the catalog refuses (an upstream on
// a user's port) is logged with its file and skipped: the catalog keeps
// what it has for it, and the other files are still registered (a
// returned error would stop them, and at start keep the agent retrying).
func (fs *FileServices) assignUserPort(req *discovery.RegisterServiceRequest, avoid []int) (skip bool, err error) {
	err = fs.UserPorts.Assign(fs.Store, req, avoid...)
	if errors.Is(err, discovery.ErrInvalid) {
		fs.Logger.Error("not registering service from file: "+strings.TrimPrefix(err.Error(), discovery.ErrInvalid.Error()+": "),
			"id", req.Instance.ID, "file", strings.TrimPrefix(req.Instance.Source, "file:"))
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("registering %s from %s: %w", req.Instance.ID, strings.TrimPrefix(req.Instance.Source, "file:"), err)
	}
	return false, nil
}

// upToDate reports whether the catalog already holds req exactly.
func (fs *FileServices) upToDate(req *discovery.RegisterServiceRequest) bool {
	_, cur, err := fs.Store.Instance(nil, req.Instance.Node, req.Instance.ID)
	if err != nil || cur == nil {
		return false
	}
	c := *cur
	c.CreateIndex, c.ModifyIndex = 0, 0
	if !reflect.DeepEqual(&c, &req.Instance) || !fs.sidecarUpToDate(req) {
		return false
	}
	_, checks, err := fs.Store.NodeChecks(nil, req.Instance.Node)
	if err != nil {
		return false
	}
	have := map[string]*discovery.Check{}
	for _, chk := range checks {
		if chk.ServiceID == req.Instance.ID {
			have[chk.CheckID] = chk
		}
	}
	if len(have) != len(req.Checks) {
		return false
	}
	for _, w := range req.Checks {
		h := have[w.CheckID]
		if h == nil || h.Name != w.Name || h.Notes != w.Notes || !reflect.DeepEqual(h.Definition, w.Definition) {
			return false
		}
	}
	return true
}

// sidecarUpToDate reports whether the catalog holds req's sidecar record
// exactly, or none when req has none.
func (fs *FileServices) sidecarUpToDate(req *discovery.RegisterServiceRequest) bool {
	_, insts, err := fs.Store.NodeInstances(nil, req.Instance.Node)
	if err != nil {
		return false
	}
	var have []*discovery.Instance
	for _, in := range insts {
		if in.SidecarFor == req.Instance.ID {
			have = append(have, in)
		}
	}
	if req.Sidecar == nil || len(have) != 1 {
		return req.Sidecar == nil && len(have) == 0
	}
	c := *have[0]
	c.CreateIndex, c.ModifyIndex = 0, 0
	return reflect.DeepEqual(&c, req.Sidecar)
}
