package xds

import (
	"context"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// callbacks learn clients from their streams and record what each was sent
// and whether it accepted it. go-control-plane calls them on the stream's
// goroutine, before it creates the watch for a request: a new client's
// snapshot is set by then, so its first request is answered at once.
func (s *Server) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamRequestFunc: func(id int64, req *discoverygrpc.DiscoveryRequest) error {
			node, err := s.streamRequest(streamKey{id: id}, req.GetNode())
			if err != nil {
				return err
			}
			// SotW: an ACK carries the version it accepts.
			if rejected := s.answer(node, req.GetTypeUrl(), req.GetResponseNonce(), req.GetVersionInfo(), req.GetErrorDetail()); rejected != "" {
				// A NACK carries the last version the client accepted, which
				// differs from the snapshot's, so the cache would resend the
				// rejected config at once, forever. Saying the rejected
				// version makes it wait for a new snapshot instead.
				req.VersionInfo = rejected
			}
			return nil
		},
		StreamResponseFunc: func(_ context.Context, id int64, _ *discoverygrpc.DiscoveryRequest, resp *discoverygrpc.DiscoveryResponse) {
			s.sent(streamKey{id: id}, resp.GetTypeUrl(), resp.GetVersionInfo(), resp.GetNonce())
		},
		StreamClosedFunc: func(id int64, _ *core.Node) { s.streamClosed(streamKey{id: id}) },

		StreamDeltaRequestFunc: func(id int64, req *discoverygrpc.DeltaDiscoveryRequest) error {
			// Delta requests after the first may omit the node, and
			// go-control-plane fills it in only after this callback.
			node, err := s.streamRequest(streamKey{delta: true, id: id}, req.GetNode())
			if err != nil {
				return err
			}
			// Delta: an ACK names only the nonce; answer() maps it to the
			// version that was sent with it.
			s.answer(node, req.GetTypeUrl(), req.GetResponseNonce(), "", req.GetErrorDetail())
			return nil
		},
		StreamDeltaResponseFunc: func(id int64, _ *discoverygrpc.DeltaDiscoveryRequest, resp *discoverygrpc.DeltaDiscoveryResponse) {
			s.sent(streamKey{delta: true, id: id}, resp.GetTypeUrl(), resp.GetSystemVersionInfo(), resp.GetNonce())
		},
		DeltaStreamClosedFunc: func(id int64, _ *core.Node) { s.streamClosed(streamKey{delta: true, id: id}) },
	}
}

// streamRequest returns the node ID of a stream's request, registering the
// stream (and, on its first stream, the client) on its first request.
func (s *Server) streamRequest(k streamKey, n *core.Node) (string, error) {
	s.mu.Lock()
	if id := s.streams[k]; id != "" {
		s.mu.Unlock()
		return id, nil
	}
	if n.GetId() == "" {
		s.mu.Unlock()
		return "", status.Error(codes.InvalidArgument, "xds: the first request of a stream must carry node.id")
	}
	id := n.GetId()
	s.streams[k] = id
	c := s.clients[id]
	if c == nil {
		c = &client{connected: time.Now(), userAgent: n.GetUserAgentName(), types: map[string]*TypeStatus{}}
		s.clients[id] = c
		s.logger.Info("xDS client connected", "node", id, "user_agent", c.userAgent)
	}
	c.streams++
	s.cfg.Metrics.connected(len(s.clients), len(s.streams))
	needSnap := c.snap == nil
	s.mu.Unlock()
	if needSnap {
		s.buildMu.Lock()
		if s.view != nil {
			s.refresh(id)
		}
		s.buildMu.Unlock()
	}
	return id, nil
}

func (c *client) typeStatus(typeURL string) *TypeStatus {
	ts := c.types[typeURL]
	if ts == nil {
		ts = &TypeStatus{}
		c.types[typeURL] = ts
	}
	return ts
}

func (s *Server) sent(k streamKey, typeURL, version, nonce string) {
	s.cfg.Metrics.response(typeURL)
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.clients[s.streams[k]]
	if c == nil {
		return
	}
	ts := c.typeStatus(typeURL)
	ts.Sent, ts.SentNonce, ts.SentAt = version, nonce, time.Now()
}

// answer records a client's ACK or NACK of a response.
func (s *Server) answer(nodeID, typeURL, nonce, version string, nack *rpcstatus.Status) (rejected string) {
	if nonce == "" && nack == nil {
		return "" // a first request, or a new subscription: no answer to anything
	}
	s.cfg.Metrics.answer(typeURL, nack != nil)
	s.mu.Lock()
	c := s.clients[nodeID]
	if c == nil {
		s.mu.Unlock()
		return ""
	}
	ts := c.typeStatus(typeURL)
	latest := nonce == ts.SentNonce
	if nack != nil {
		if latest {
			rejected = ts.Sent
		}
		ts.Nacks++
		ts.Rejected = ts.Rejected || latest
		ts.LastNack = &Nack{Version: rejected, Nonce: nonce, Error: nack.GetMessage(), At: time.Now()}
		s.mu.Unlock()
		s.logger.Warn("xDS client rejected its configuration", "node", nodeID, "type", shortType(typeURL),
			"version", rejected, "nonce", nonce, "error", nack.GetMessage())
		return rejected
	}
	if version == "" && latest {
		version = ts.Sent
	}
	if version != "" {
		ts.Acked, ts.AckedAt = version, time.Now()
	}
	if latest {
		ts.Rejected = false
	}
	s.mu.Unlock()
	return ""
}

// streamClosed forgets a stream; a client whose last stream closed is
// forgotten with its snapshot.
func (s *Server) streamClosed(k streamKey) {
	s.mu.Lock()
	id, ok := s.streams[k]
	delete(s.streams, k)
	c := s.clients[id]
	if !ok || c == nil {
		s.mu.Unlock()
		return
	}
	c.streams--
	gone := c.streams <= 0
	if gone {
		delete(s.clients, id)
	}
	s.cfg.Metrics.connected(len(s.clients), len(s.streams))
	s.mu.Unlock()
	if gone {
		// Under buildMu, so an update in progress does not set it again.
		s.buildMu.Lock()
		s.cache.ClearSnapshot(id)
		s.buildMu.Unlock()
		s.logger.Info("xDS client disconnected", "node", id)
	}
}
