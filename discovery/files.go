package discovery

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// FileDefinition is a service definition read from a file: the
// registration (whose Line is where it starts) and the file, so that every
// check made after reading can name file:line.
type FileDefinition struct {
	File    string
	Service ServiceRegistration
}

// BuildFileServices validates file definitions into registrations for
// node, as the agent stores them and as `services register` and `validate`
// check them. Errors name file and line; two definitions with one ID, and
// one user for two services, are errors.
func BuildFileServices(node string, defs []FileDefinition) ([]*RegisterServiceRequest, error) {
	var out []*RegisterServiceRequest
	var errs []error
	seen := map[string]string{}
	users := fileUsers{}
	for _, fd := range defs {
		def := &fd.Service
		where := fmt.Sprintf("%s:%d", fd.File, def.Line)
		// The protocol travels as Meta.protocol, but a file says protocol:
		// name the key the file used.
		if p := def.Protocol; p != "" {
			if !ValidProtocol(p) {
				errs = append(errs, fmt.Errorf("%s: service %q: protocol: %q is not one of %s", where, def.Name, p, strings.Join(Protocols, ", ")))
				continue
			}
			if m := def.Meta[MetaProtocol]; m != "" && m != p {
				errs = append(errs, fmt.Errorf("%s: service %q: protocol: %q conflicts with meta.protocol %q", where, def.Name, p, m))
				continue
			}
		}
		if u := def.User; u != "" {
			if m := def.Meta[MetaUser]; m != "" && m != u {
				errs = append(errs, fmt.Errorf("%s: service %q: user: %q conflicts with meta.%s %q", where, def.Name, u, MetaUser, m))
				continue
			}
			if _, err := LookupUser(u); err != nil {
				errs = append(errs, fmt.Errorf("%s: service %q: user: %w", where, def.Name, err))
				continue
			}
		}
		req, err := def.ForAPI().Build(node, "file:"+filepath.Clean(fd.File))
		if err != nil {
			msg := strings.TrimPrefix(err.Error(), ErrInvalid.Error()+": ")
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
func userKey(d *ServiceRegistration) string {
	if d.User != "" {
		return "user"
	}
	return "meta." + MetaUser
}

// fileUsers checks the users of file definitions: each exists on this
// host, and runs one service (its captured connections can carry only one
// identity). Instances of one service may share their user.
type fileUsers map[uint32]fileUser

type fileUser struct{ service, user, where string }

func (fu fileUsers) add(in Instance, where string) error {
	if in.User == "" {
		return nil
	}
	uid, err := LookupUser(in.User)
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
