package httpapi

import (
	"strings"

	"github.com/vmesh/vmesh/discovery"
)

// checkUser refuses an agent registration whose user does not exist on
// this host, or which another service of this node already runs as: a
// user's captured connections can carry only one service's identity.
func (a *API) checkUser(req *discovery.RegisterServiceRequest) error {
	in := &req.Instance
	if in.User == "" {
		return nil
	}
	uid, err := discovery.LookupUser(in.User)
	if err != nil {
		return badRequest("Meta.%s: %v", discovery.MetaUser, err)
	}
	_, insts, err := a.Store.NodeInstances(nil, in.Node)
	if err != nil {
		return err
	}
	for _, o := range insts {
		if o.User == "" || o.ID == in.ID || strings.EqualFold(o.Service, in.Service) {
			continue
		}
		if o.User == in.User {
			return badRequest("Meta.%s: user %q already runs service %q (instance %q) on this node; one service per user", discovery.MetaUser, in.User, o.Service, o.ID)
		}
		if ouid, err := discovery.LookupUser(o.User); err == nil && ouid == uid {
			return badRequest("Meta.%s: user %q is UID %d, which already runs service %q (instance %q, user %q) on this node; one service per user",
				discovery.MetaUser, in.User, uid, o.Service, o.ID, o.User)
		}
	}
	return nil
}
