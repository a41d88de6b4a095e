package mesh

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/mesh/config"
)

// buildFileServices validates file definitions into registrations for node.
// Errors name file and line; two definitions with one ID are an error.
func buildFileServices(node string, defs []config.FileService) ([]*discovery.RegisterServiceRequest, error) {
	var out []*discovery.RegisterServiceRequest
	var errs []error
	seen := map[string]string{}
	users := fileUsers{}
	for _, fs := range defs {
		where := fmt.Sprintf("%s:%d", fs.File, fs.Def.Line)
		// The protocol travels as Meta.protocol, but a file says protocol:
		// name the key the file used.
		if p := fs.Def.Protocol; p != "" {
			if !discovery.ValidProtocol(p) {
				errs = append(errs, fmt.Errorf("%s: service %q: protocol: %q is not one of %s", where, fs.Def.Name, p, strings.Join(discovery.Protocols, ", ")))
				continue
			}
			if m := fs.Def.Meta[discovery.MetaProtocol]; m != "" && m != p {
				errs = append(errs, fmt.Errorf("%s: service %q: protocol: %q conflicts with meta.protocol %q", where, fs.Def.Name, p, m))
				continue
			}
		}
		if u := fs.Def.User; u != "" {
			if m := fs.Def.Meta[discovery.MetaUser]; m != "" && m != u {
				errs = append(errs, fmt.Errorf("%s: service %q: user: %q conflicts with meta.%s %q", where, fs.Def.Name, u, discovery.MetaUser, m))
				continue
			}
			if _, err := discovery.LookupUser(u); err != nil {
				errs = append(errs, fmt.Errorf("%s: service %q: user: %w", where, fs.Def.Name, err))
				continue
			}
		}
		req, err := fs.Def.Registration().Build(node, "file:"+filepath.Clean(fs.File))
		if err != nil {
			msg := strings.TrimPrefix(err.Error(), discovery.ErrInvalid.Error()+": ")
			errs = append(errs, fmt.Errorf("%s: service %q: %s", where, fs.Def.Name, strings.ReplaceAll(msg, "\n", "; ")))
			continue
		}
		id := req.Instance.ID
		if prev, dup := seen[id]; dup {
			errs = append(errs, fmt.Errorf("%s: service %q: id: duplicate ID %q (also defined at %s)", where, fs.Def.Name, id, prev))
			continue
		}
		if err := users.add(req.Instance, where); err != nil {
			errs = append(errs, fmt.Errorf("%s: service %q: %s: %w", where, fs.Def.Name, userKey(fs.Def), err))
			continue
		}
		seen[id] = where
		out = append(out, req)
	}
	return out, errors.Join(errs...)
}

// userKey is the key a file used to name the user.
func userKey(d config.ServiceDef) string {
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

// assignUserPort gives a file service's user its port
// (discovery.UserPortAllocator.Assign; the caller holds its lock). A
// definition the catalog refuses (an upstream on a user's port) is logged
// with its file and skipped: the catalog keeps what it has for it, and the
// other files are still registered (a returned error would stop them, and
// at start keep the agent retrying).
func (a *Agent) assignUserPort(req *discovery.RegisterServiceRequest, avoid []int) (skip bool, err error) {
	err = a.userPorts.Assign(a.store, req, avoid...)
	if errors.Is(err, discovery.ErrInvalid) {
		a.logger.Error("not registering service from file: "+strings.TrimPrefix(err.Error(), discovery.ErrInvalid.Error()+": "),
			"id", req.Instance.ID, "file", strings.TrimPrefix(req.Instance.Source, "file:"))
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("registering %s from %s: %w", req.Instance.ID, strings.TrimPrefix(req.Instance.Source, "file:"), err)
	}
	return false, nil
}
