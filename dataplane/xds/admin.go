package xds

import (
	"bytes"
	"encoding/json"
	"net/http"
	"sort"
)

// ConfigDumpHandler serves GET /config_dump: every connected client's
// current snapshot (or ?node=ID's), as JSON keyed by node ID. It is meant
// for the admin address, like Envoy's own /config_dump.
func (s *Server) ConfigDumpHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		want := r.URL.Query().Get("node")
		s.mu.Lock()
		ids := make([]string, 0, len(s.clients))
		for id := range s.clients {
			if want == "" || id == want {
				ids = append(ids, id)
			}
		}
		s.mu.Unlock()
		if want != "" && len(ids) == 0 {
			http.Error(w, "no connected xDS client with node ID "+want, http.StatusNotFound)
			return
		}
		sort.Strings(ids)
		var buf bytes.Buffer
		buf.WriteByte('{')
		n := 0
		for _, id := range ids {
			snap, ok := s.Snapshot(id)
			if !ok {
				continue
			}
			js, err := SnapshotJSON(snap)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			if n > 0 {
				buf.WriteByte(',')
			}
			n++
			key, _ := json.Marshal(id)
			buf.Write(key)
			buf.WriteByte(':')
			buf.Write(js)
		}
		buf.WriteByte('}')
		var out bytes.Buffer
		if err := json.Indent(&out, buf.Bytes(), "", "  "); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		out.WriteByte('\n')
		w.Header().Set("Content-Type", "application/json")
		w.Write(out.Bytes())
	})
}

// ClientsHandler serves GET /v1/vmesh/xds/clients: the connected clients
// with what each was last sent, ACKed and NACKed per resource type.
func (s *Server) ClientsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(s.Clients())
	})
}
