package raft

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/vmesh/vmesh/discovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The replica stream: every server keeps a bounded history of the
// replicated commands its FSM applied and streams it to client replicas
// (replica.go) over the cluster port. A subscriber names the last index it
// has; a server that still holds every replicated change after it sends
// only those, else a filtered snapshot at its current index first. Then it
// follows the FSM live.

// StreamConfig tunes the replica stream of a server.
type StreamConfig struct {
	// History is how many replicated commands a server keeps for
	// subscribers that resume (default DefaultStreamHistory). It is also
	// each subscriber's buffer: one that falls further behind is dropped.
	History int
	// KeepAlive is how often an idle subscriber hears from the server
	// (default DefaultStreamKeepAlive), so a client can tell a quiet
	// cluster from a dead connection.
	KeepAlive time.Duration
}

// Defaults of StreamConfig.
const (
	DefaultStreamHistory   = 8192
	DefaultStreamKeepAlive = 10 * time.Second
)

func (c StreamConfig) withDefaults() StreamConfig {
	if c.History <= 0 {
		c.History = DefaultStreamHistory
	}
	if c.KeepAlive <= 0 {
		c.KeepAlive = DefaultStreamKeepAlive
	}
	return c
}

// replicated are the commands that reach client replicas. KV and join
// tokens are absent on purpose: KV is application data clients do not
// serve from the replica, tokens are secrets. The client applies only
// these too.
var replicated = map[discovery.MessageType]bool{
	discovery.RegisterNodeType:      true,
	discovery.DeregisterNodeType:    true,
	discovery.RegisterServiceType:   true,
	discovery.DeregisterServiceType: true,
	discovery.RegisterCheckType:     true,
	discovery.DeregisterCheckType:   true,
	discovery.UpdateCheckType:       true,
	discovery.SetCAType:             true, // without the key: replicaCommand
	discovery.ConfigEntryType:       true,
	discovery.VIPType:               true,
	discovery.IntentionType:         true,
	discovery.RevocationType:        true, // a client checks the deny list on its handshakes too
	// ACL commands reach a client only as this marker: that ACLs
	// changed, so it drops the tokens it resolved (replicaCommand).
	discovery.ACLChangedType: true,
	// External nodes (catalog_register.go): clients answer DNS and health
	// for them too.
	discovery.CatalogRegisterType:   true,
	discovery.CatalogDeregisterType: true,
	discovery.AutopilotSetType:      true,
}

// replicaCommand is the encoded command buf as a client may see it, or
// nil when it must not leave the servers.
func replicaCommand(buf []byte) ([]byte, error) {
	if len(buf) == 0 {
		return nil, nil
	}
	t := discovery.MessageType(buf[0]) &^ discovery.IgnoreUnknownTypeFlag
	if discovery.IsACLCommand(t) {
		return encodeCommand(discovery.ACLChangedRequest{})
	}
	if !replicated[t] {
		return nil, nil
	}
	if t != discovery.SetCAType {
		return buf, nil
	}
	var req discovery.SetCARequest
	if err := decode(buf[1:], &req); err != nil {
		return nil, fmt.Errorf("decoding the CA command: %w", err)
	}
	req.CA = *req.CA.Public()
	return encodeCommand(req)
}

// Stream messages. The snapshot and the deltas carry records and commands
// in the FSM's own encoding (type byte + msgpack), inside the cluster
// RPC's JSON.

// SubscribeRequest opens a replica stream. FromIndex is the last raft
// index the replica has (0: it has nothing).
type SubscribeRequest struct{ FromIndex uint64 }

// Stream event kinds.
const (
	EventSnapshot    = 1 // Records: part of a snapshot at Index
	EventSnapshotEnd = 2 // the snapshot at Index is complete
	EventDeltas      = 3 // Deltas: commands, in index order
	EventProgress    = 4 // the replica is current up to Index
)

// SubscribeEvent is one message of a replica stream.
type SubscribeEvent struct {
	Kind    uint8
	Index   uint64   `json:",omitempty"`
	Records [][]byte `json:",omitempty"` // record type byte + msgpack
	Deltas  []Delta  `json:",omitempty"`
}

// Delta is a command the FSM applied at Index.
type Delta struct {
	Index   uint64
	Command []byte // type byte + msgpack, as in the raft log
}

// errSubscriberDropped: the subscriber fell further behind than the
// history; it reconnects and resumes (or takes a snapshot).
var errSubscriberDropped = errors.New("raft: replica stream fell behind the server's history; resubscribe")

type histEntry struct {
	index uint64
	// event is the entry alone as a whole EventDeltas message in the
	// stream's encoding (the command inside it), made once when the entry
	// is recorded: every subscriber that is current sends these same
	// bytes.
	event encodedEvent
}

// delta is the entry's Delta in the stream's encoding, inside its event.
func (e histEntry) delta() []byte {
	return e.event[len(deltasPrefix) : len(e.event)-len(deltasSuffix)]
}

// encodedEvent is a SubscribeEvent already in the cluster RPC's encoding
// (jsonCodec sends it as it is). Its bytes are shared between streams and
// never written to.
type encodedEvent []byte

// An EventDeltas message is deltasPrefix, the deltas' JSON separated by
// commas, and deltasSuffix: the bytes json.Marshal makes of a
// SubscribeEvent with Kind EventDeltas and only Deltas set.
var (
	deltasPrefix = []byte(`{"Kind":3,"Deltas":[`)
	deltasSuffix = []byte(`]}`)
)

// encodeDeltaEvent is the EventDeltas message of the one delta d.
func encodeDeltaEvent(d Delta) (encodedEvent, error) {
	js, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	ev := make([]byte, 0, len(deltasPrefix)+len(js)+len(deltasSuffix))
	ev = append(ev, deltasPrefix...)
	ev = append(ev, js...)
	return append(ev, deltasSuffix...), nil
}

// history is the server's memory of replicated commands. The FSM appends
// to it under mu (write-locked) while it applies, so a subscriber that
// takes a catalog snapshot under mu gets the catalog and the history at
// the same index. Subscribers read it under the read lock, all at once.
type history struct {
	mu     sync.RWMutex
	logger *slog.Logger
	// ring grows by doubling up to size entries, then keeps the last
	// size: a small cluster's servers never hold size entries' worth
	// of slots (8,192 × 32 bytes, scanned by every GC) they do not use.
	ring []histEntry
	size int
	head int // position of the oldest entry
	n    int
	// floor: every replicated change after it is in ring. last: the last
	// command index the FSM applied, replicated or not.
	floor, last uint64
	wake        chan struct{} // closed when an entry is added
	subs        map[*subscriber]struct{}

	// Counters for tests and metrics.
	snapshots atomic.Uint64 // full snapshots sent
	resumes   atomic.Uint64 // subscriptions served from the history
	dropped   atomic.Uint64 // subscribers dropped for falling behind
}

func newHistory(size int, logger *slog.Logger) *history {
	if size <= 0 {
		size = DefaultStreamHistory
	}
	return &history{logger: logger, size: size, wake: make(chan struct{}), subs: map[*subscriber]struct{}{}}
}

// recordLocked notes the command applied at idx; resp is the FSM's answer.
// A command that failed changed nothing and is not kept.
func (h *history) recordLocked(idx uint64, buf []byte, resp any) {
	h.last = idx
	if err, ok := resp.(error); ok && err != nil {
		return
	}
	data, err := replicaCommand(buf)
	var ev encodedEvent
	if err == nil && data != nil {
		ev, err = encodeDeltaEvent(Delta{Index: idx, Command: data})
	}
	if err != nil {
		// Every server fails the same way; a replica resyncs by snapshot.
		h.logger.Error("replica stream: cannot filter a command; subscribers will resync", "index", idx, "err", err)
		h.resetLocked(idx)
		return
	}
	if data == nil {
		return
	}
	if h.n == len(h.ring) && len(h.ring) < h.size {
		h.growLocked()
	}
	pos := (h.head + h.n) % len(h.ring)
	if h.n == len(h.ring) {
		evicted := h.ring[h.head].index
		h.head = (h.head + 1) % len(h.ring)
		h.floor = evicted
		h.dropBehindLocked(evicted)
	} else {
		h.n++
	}
	h.ring[pos] = histEntry{index: idx, event: ev}
	close(h.wake)
	h.wake = make(chan struct{})
}

// growLocked doubles the full ring (at least 64 entries, at most size),
// its entries in order from position 0.
func (h *history) growLocked() {
	ring := make([]histEntry, min(max(2*len(h.ring), 64), h.size))
	for i := range h.n {
		ring[i] = h.ring[(h.head+i)%len(h.ring)]
	}
	h.ring, h.head = ring, 0
}

// resetLocked forgets the history: after a snapshot restore the changes
// that led to idx are not known one by one.
func (h *history) resetLocked(idx uint64) {
	h.ring = nil
	floor := idx
	if idx < h.last {
		// An operator's restore took the catalog back to an older index
		// (raft.Restore): every replica, however current, holds changes
		// the restored catalog does not, so each takes a snapshot.
		floor = h.last + 1
	}
	h.head, h.n, h.floor, h.last = 0, 0, floor, max(idx, h.last)
	h.dropBehindLocked(floor)
	close(h.wake)
	h.wake = make(chan struct{})
}

// dropBehindLocked drops every subscriber that has not taken the entry at
// idx: it cannot get it any more.
func (h *history) dropBehindLocked(idx uint64) {
	for s := range h.subs {
		if s.cursor.Load() < idx {
			s.drop()
			delete(h.subs, s)
			h.dropped.Add(1)
		}
	}
}

// subscriber is one replica stream's position in the history.
type subscriber struct {
	// cursor: the replica has (or is sent) all up to here. Only the
	// subscriber's stream moves it, under history.mu's read lock; the
	// history reads it under the write lock.
	cursor    atomic.Uint64
	dropped   chan struct{}
	closeOnce sync.Once
}

func (s *subscriber) drop() { s.closeOnce.Do(func() { close(s.dropped) }) }

// subscribe registers a subscriber. When from is not covered by the
// history it returns a catalog snapshot at the subscriber's start.
func (h *history) subscribe(from uint64, store *discovery.Store) (*subscriber, *discovery.Snapshot) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := &subscriber{dropped: make(chan struct{})}
	var snap *discovery.Snapshot
	if from == 0 || from < h.floor {
		snap = store.Snapshot()
		s.cursor.Store(h.last)
		h.snapshots.Add(1)
	} else {
		s.cursor.Store(from)
		h.resumes.Add(1)
	}
	h.subs[s] = struct{}{}
	return s, snap
}

func (h *history) unsubscribe(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs, s)
}

// maxDeltaBatch bounds one event, and what a subscriber holds outside the
// history.
const maxDeltaBatch = 256

// take returns the entries after s's cursor (at most maxDeltaBatch) as
// one EventDeltas message (nil when there are none), the index of its
// last delta, the index the subscriber is then current to, and a channel
// closed at the next entry. A subscriber that is one entry behind, as all
// are while they keep up, gets the entry's own shared bytes.
func (h *history) take(s *subscriber) (ev encodedEvent, lastDelta, cur uint64, wake <-chan struct{}, err error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	select {
	case <-s.dropped:
		return nil, 0, 0, nil, errSubscriberDropped
	default:
	}
	cursor := s.cursor.Load()
	at := func(i int) *histEntry { return &h.ring[(h.head+i)%len(h.ring)] }
	// The ring is in index order: the first entry after the cursor.
	i := sort.Search(h.n, func(i int) bool { return at(i).index > cursor })
	end := min(h.n, i+maxDeltaBatch)
	switch {
	case i == end:
	case end-i == 1:
		ev, lastDelta = at(i).event, at(i).index
	default:
		size := len(deltasPrefix) + len(deltasSuffix)
		for j := i; j < end; j++ {
			size += len(at(j).delta()) + 1
		}
		ev = make(encodedEvent, 0, size)
		ev = append(ev, deltasPrefix...)
		for j := i; j < end; j++ {
			if j > i {
				ev = append(ev, ',')
			}
			ev = append(ev, at(j).delta()...)
		}
		ev = append(ev, deltasSuffix...)
		lastDelta = at(end - 1).index
	}
	if end == h.n {
		cursor = max(cursor, h.last)
	} else {
		cursor = lastDelta
	}
	s.cursor.Store(cursor)
	return ev, lastDelta, cursor, h.wake, nil
}

// ---- the RPC ----

var subscribeStreamDesc = grpc.StreamDesc{
	StreamName:    "Subscribe",
	ServerStreams: true,
	Handler: func(srv any, stream grpc.ServerStream) error {
		req := new(SubscribeRequest)
		if err := stream.RecvMsg(req); err != nil {
			return err
		}
		return srv.(*Server).rpcSubscribe(req, stream)
	},
}

// rpcSubscribe streams the replicated catalog. Any node certificate may
// subscribe: a client's proxy needs the whole mesh. Nothing secret is in
// the stream (replicated, discovery.ReplicaRecord).
func (s *Server) rpcSubscribe(req *SubscribeRequest, stream grpc.ServerStream) error {
	name, err := s.peerNode(stream.Context())
	if err != nil {
		return err
	}
	h := s.fsm.hist
	sub, snap := h.subscribe(req.FromIndex, s.store)
	defer h.unsubscribe(sub)
	s.logger.Debug("replica subscribed", "node", name, "from", req.FromIndex, "snapshot", snap != nil)
	// The sends run on their own goroutine so that a subscriber stuck on
	// a full connection can be dropped: returning ends the stream, which
	// unblocks the send.
	errc := make(chan error, 1)
	go func() { errc <- s.sendStream(stream, h, sub, snap) }()
	select {
	case err := <-errc:
		return err
	case <-sub.dropped:
		s.logger.Info("replica subscriber dropped: it fell behind the stream history", "node", name)
		return status.Error(codes.ResourceExhausted, errSubscriberDropped.Error())
	case <-s.done:
		return status.Error(codes.Unavailable, "server closing")
	}
}

// snapshotBatch is how many records go in one snapshot event.
const snapshotBatch = 512

func (s *Server) sendStream(stream grpc.ServerStream, h *history, sub *subscriber, snap *discovery.Snapshot) error {
	ctx := stream.Context()
	if snap != nil {
		if err := sendSnapshot(stream, snap, sub.cursor.Load()); err != nil {
			return err
		}
	}
	// A keepalive goes out only after KeepAlive without any other event.
	keep := time.NewTimer(s.stream.KeepAlive)
	defer keep.Stop()
	lastSend := time.Now()
	send := func(ev encodedEvent) error {
		lastSend = time.Now()
		return stream.SendMsg(ev)
	}
	var sent uint64 // highest index the replica was told about
	for {
		// A subscriber revoked since it connected hears no more
		// (revoke.go): the revocation itself woke it.
		if err := s.refuseRevoked(ctx); err != nil {
			return err
		}
		ev, lastDelta, cur, wake, err := h.take(sub)
		if err != nil {
			return status.Error(codes.ResourceExhausted, err.Error())
		}
		if ev != nil {
			if err := send(ev); err != nil {
				return err
			}
			sent = lastDelta
			continue // take again: more entries, or a progress mark
		}
		if cur > sent {
			// Only commands that do not replicate since: the replica is
			// current to cur all the same.
			if err := send(encodeProgress(cur)); err != nil {
				return err
			}
			sent = cur
		}
		select {
		case <-wake:
		case <-keep.C:
			if idle := time.Since(lastSend); idle < s.stream.KeepAlive {
				keep.Reset(s.stream.KeepAlive - idle)
				continue
			}
			if err := send(encodeProgress(sent)); err != nil {
				return err
			}
			keep.Reset(s.stream.KeepAlive)
		case <-sub.dropped:
			return status.Error(codes.ResourceExhausted, errSubscriberDropped.Error())
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// encodeProgress is the EventProgress message at idx, as json.Marshal
// makes it of the SubscribeEvent, without its reflection.
func encodeProgress(idx uint64) encodedEvent {
	if idx == 0 {
		return encodedEvent(`{"Kind":4}`)
	}
	b := make(encodedEvent, 0, 40)
	b = append(b, `{"Kind":4,"Index":`...)
	b = strconv.AppendUint(b, idx, 10)
	return append(b, '}')
}

// sendSnapshot streams the replicated tables of snap, which is at index at.
func sendSnapshot(stream grpc.ServerStream, snap *discovery.Snapshot, at uint64) error {
	var batch [][]byte
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := stream.SendMsg(&SubscribeEvent{Kind: EventSnapshot, Index: at, Records: batch})
		batch = nil
		return err
	}
	err := snap.Walk(func(rt discovery.RecordType, rec any) error {
		out, ok := discovery.ReplicaRecord(rt, rec)
		if !ok {
			return nil
		}
		var buf bytes.Buffer
		buf.WriteByte(byte(rt))
		if err := codec.NewEncoder(&buf, msgpackHandle).Encode(out); err != nil {
			return fmt.Errorf("encoding a snapshot record: %w", err)
		}
		batch = append(batch, buf.Bytes())
		if len(batch) == snapshotBatch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err == nil {
		err = stream.SendMsg(&SubscribeEvent{Kind: EventSnapshotEnd, Index: at})
	}
	return err
}

// StreamStats counts this server's replica stream subscriptions.
type StreamStats struct {
	Subscribers int
	Snapshots   uint64 // subscriptions that needed a full snapshot
	Resumes     uint64 // subscriptions served from the history
	Dropped     uint64 // subscribers dropped for falling behind
}

// StreamStats reports the replica stream's counters.
func (s *Server) StreamStats() StreamStats {
	h := s.fsm.hist
	h.mu.RLock()
	n := len(h.subs)
	h.mu.RUnlock()
	return StreamStats{Subscribers: n, Snapshots: h.snapshots.Load(), Resumes: h.resumes.Load(), Dropped: h.dropped.Load()}
}
