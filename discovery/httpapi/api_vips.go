package httpapi

import (
	"net/http"

	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/discovery"
)

// vipsList serves GET /v1/vmesh/vips: every allocation, by service.
func (a *API) vipsList(w http.ResponseWriter, r *http.Request) {
	var out []*discovery.VIP
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, vips, err := a.Store.VIPs(ws)
		out = vips
		return idx, err
	}) {
		return
	}
	writeJSON(w, nonNil(out))
}
