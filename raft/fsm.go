package raft

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-msgpack/v2/codec"
	hraft "github.com/hashicorp/raft"
	"github.com/vmesh/vmesh/discovery"
)

// applier applies one decoded command at a raft index. What it returns is
// the Apply future's response: nil or an error for the caller.
type applier func(s *discovery.Store, buf []byte, index uint64) any

// appliers is the FSM's dispatch table. It must stay deterministic: no
// clocks, no I/O, no randomness — every node applies the same log to the
// same state.
var appliers = map[discovery.MessageType]applier{
	discovery.RegisterNodeType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.RegisterNodeRequest
		return orErr(decode(buf, &req), func() error { return applyRegisterNode(s, idx, &req.Node) })
	},
	discovery.DeregisterNodeType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.DeregisterNodeRequest
		return orErr(decode(buf, &req), func() error { return s.DeleteNode(idx, req.Node) })
	},
	discovery.RegisterServiceType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.RegisterServiceRequest
		return orErr(decode(buf, &req), func() error { return s.RegisterService(idx, &req) })
	},
	discovery.DeregisterServiceType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.DeregisterServiceRequest
		return orErr(decode(buf, &req), func() error { return s.DeleteService(idx, req.Node, req.ServiceID) })
	},
	discovery.RegisterCheckType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.RegisterCheckRequest
		return orErr(decode(buf, &req), func() error { return s.EnsureCheck(idx, &req.Check) })
	},
	discovery.DeregisterCheckType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.DeregisterCheckRequest
		return orErr(decode(buf, &req), func() error { return s.DeleteCheck(idx, req.Node, req.CheckID) })
	},
	discovery.UpdateCheckType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.UpdateCheckRequest
		return orErr(decode(buf, &req), func() error { return s.UpdateCheck(idx, req.Node, req.CheckID, req.Status, req.Output) })
	},
	discovery.CatalogRegisterType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.CatalogRegisterRequest
		return orErr(decode(buf, &req), func() error { return s.CatalogRegister(idx, &req) })
	},
	discovery.CatalogDeregisterType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.CatalogDeregisterRequest
		return orErr(decode(buf, &req), func() error { return s.CatalogDeregister(idx, &req) })
	},
	discovery.AutopilotSetType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.AutopilotSetRequest
		return orErr(decode(buf, &req), func() error { return s.AutopilotSet(idx, &req) })
	},
	discovery.KVType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.KVRequest
		return orErr(decode(buf, &req), func() error { return s.KVApply(idx, req.Op, &req.Entry) })
	},
	discovery.SetCAType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.SetCARequest
		return orErr(decode(buf, &req), func() error { return s.SetCA(idx, &req.CA) })
	},
	discovery.TokenCreateType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.TokenCreateRequest
		return orErr(decode(buf, &req), func() error { return s.TokenCreate(idx, &req.Token) })
	},
	discovery.TokenDeleteType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.TokenDeleteRequest
		return orErr(decode(buf, &req), func() error { return s.TokenDelete(idx, req.ID) })
	},
	discovery.TokenUseType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.TokenUseRequest
		return orErr(decode(buf, &req), func() error { return s.TokenUse(idx, req.ID, req.Now) })
	},
	discovery.TokenRevokeType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.TokenRevokeRequest
		return orErr(decode(buf, &req), func() error { return s.TokenRevoke(idx, req.ID, req.Now) })
	},
	discovery.ConfigEntryType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.ConfigEntryRequest
		return orErr(decode(buf, &req), func() error { return s.ConfigEntryApply(idx, req.Op, &req.Entry) })
	},
	discovery.VIPType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.VIPRequest
		return orErr(decode(buf, &req), func() error { return s.VIPApply(idx, req.Op, req.Service, req.IP) })
	},
	discovery.IntentionType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.IntentionRequest
		return orErr(decode(buf, &req), func() error { return s.IntentionApplyRequest(idx, &req) })
	},
	discovery.ACLTokenSetType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.ACLTokenSetRequest
		return orErr(decode(buf, &req), func() error { return s.ACLTokenSet(idx, &req.Token) })
	},
	discovery.ACLTokenDeleteType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.ACLTokenDeleteRequest
		return orErr(decode(buf, &req), func() error { return s.ACLTokenDelete(idx, req.AccessorID) })
	},
	discovery.ACLPolicySetType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.ACLPolicySetRequest
		return orErr(decode(buf, &req), func() error { return s.ACLPolicySet(idx, &req.Policy) })
	},
	discovery.ACLPolicyDeleteType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.ACLPolicyDeleteRequest
		return orErr(decode(buf, &req), func() error { return s.ACLPolicyDelete(idx, req.ID) })
	},
	discovery.ACLRoleSetType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.ACLRoleSetRequest
		return orErr(decode(buf, &req), func() error { return s.ACLRoleSet(idx, &req.Role) })
	},
	discovery.ACLRoleDeleteType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.ACLRoleDeleteRequest
		return orErr(decode(buf, &req), func() error { return s.ACLRoleDelete(idx, req.ID) })
	},
	discovery.ACLBootstrapType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.ACLBootstrapRequest
		return orErr(decode(buf, &req), func() error { return s.ACLBootstrap(idx, &req.Token, req.ResetIndex) })
	},
	discovery.ACLChangedType: func(s *discovery.Store, buf []byte, idx uint64) any {
		return s.ACLChanged(idx)
	},
	discovery.RevocationType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.RevocationRequest
		return orErr(decode(buf, &req), func() error { return s.RevocationApply(idx, req.Op, &req.Revocation) })
	},
	discovery.SessionType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.SessionRequest
		return orErr(decode(buf, &req), func() error { return s.SessionApply(idx, req.Op, &req.Session) })
	},
	// A transaction answers its result, failed or not: a failed one
	// changed nothing, and its caller needs to know which operations
	// failed (sessions.go carries it back to the node that asked).
	discovery.TxnType: func(s *discovery.Store, buf []byte, idx uint64) any {
		var req discovery.TxnRequest
		if err := decode(buf, &req); err != nil {
			return fmt.Errorf("decoding command: %w", err)
		}
		return s.Txn(idx, &req)
	},
}

// orErr runs apply unless decoding failed. A command that does not decode
// was written by a newer or broken agent; it fails the same way on every
// node, so the state stays identical.
func orErr(decodeErr error, apply func() error) any {
	if decodeErr != nil {
		return fmt.Errorf("decoding command: %w", decodeErr)
	}
	if err := apply(); err != nil {
		return err
	}
	return nil
}

type fsm struct {
	store  *discovery.Store
	logger *slog.Logger
	// applied is the index of the last entry applied to the catalog; a
	// follower waits on it to give read-your-writes after a forward.
	applied atomic.Uint64
	mu      sync.Mutex
	notify  chan struct{} // closed and replaced on every apply
	// hist is what the replica stream sends (stream.go); Apply and
	// Restore update it while they change the catalog.
	hist *history
}

func newFSM(store *discovery.Store, logger *slog.Logger) *fsm {
	return &fsm{store: store, logger: logger, hist: newHistory(DefaultStreamHistory, logger)}
}

// appliedCh is closed at the next apply.
func (f *fsm) appliedCh() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.notify == nil {
		f.notify = make(chan struct{})
	}
	return f.notify
}

func (f *fsm) setApplied(idx uint64) {
	f.applied.Store(idx)
	f.mu.Lock()
	if f.notify != nil {
		close(f.notify)
		f.notify = nil // made again by the next waiter
	}
	f.mu.Unlock()
}

func (f *fsm) Apply(l *hraft.Log) any {
	defer f.setApplied(l.Index)
	if l.Type != hraft.LogCommand || len(l.Data) == 0 {
		return nil
	}
	if f.hist == nil { // an FSM built bare in a test
		return f.apply(l)
	}
	// Under the history's lock, so that a replica stream that starts with
	// a snapshot sees the catalog and the history at the same index.
	f.hist.mu.Lock()
	defer f.hist.mu.Unlock()
	resp := f.apply(l)
	f.hist.recordLocked(l.Index, l.Data, resp)
	return resp
}

func (f *fsm) apply(l *hraft.Log) any {
	t := discovery.MessageType(l.Data[0])
	ignorable := t&discovery.IgnoreUnknownTypeFlag != 0
	t &^= discovery.IgnoreUnknownTypeFlag
	fn, ok := appliers[t]
	if !ok {
		if ignorable {
			f.logger.Warn("skipping unknown ignorable command", "type", t, "index", l.Index)
			return nil
		}
		// Going on would make this node's state differ from its peers'.
		panic(fmt.Sprintf("raft: unknown command type %d at index %d; upgrade this agent", t, l.Index))
	}
	// The entry's own time (the leader's clock when it appended it, the
	// same on every server) is what lock-delays are measured on.
	f.store.SetLogTime(l.AppendedAt)
	return fn(f.store, l.Data[1:], l.Index)
}

// StoreConfiguration makes configuration entries count as applied, so a
// follower waiting for an index that is a membership change gets through.
func (f *fsm) StoreConfiguration(index uint64, _ hraft.Configuration) {
	f.setApplied(index)
}

// snapshotVersion is the first byte of every snapshot stream.
const snapshotVersion = 1

func (f *fsm) Snapshot() (hraft.FSMSnapshot, error) {
	return &fsmSnapshot{snap: f.store.Snapshot()}, nil
}

type fsmSnapshot struct{ snap *discovery.Snapshot }

// Persist writes the snapshot as a stream: a version byte, then records of
// (type, msgpack value), then a zero type as the end mark.
func (s *fsmSnapshot) Persist(sink hraft.SnapshotSink) error {
	w := bufio.NewWriter(sink)
	if err := w.WriteByte(snapshotVersion); err != nil {
		sink.Cancel()
		return err
	}
	enc := codec.NewEncoder(w, msgpackHandle)
	err := s.snap.Walk(func(rt discovery.RecordType, rec any) error {
		if err := enc.Encode(uint8(rt)); err != nil {
			return err
		}
		return enc.Encode(rec)
	})
	if err == nil {
		err = enc.Encode(uint8(0))
	}
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		sink.Cancel()
		return fmt.Errorf("persisting snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	r := bufio.NewReader(rc)
	v, err := r.ReadByte()
	if err != nil {
		return fmt.Errorf("reading snapshot version: %w", err)
	}
	if v != snapshotVersion {
		return fmt.Errorf("raft: unsupported snapshot version %d", v)
	}
	dec := codec.NewDecoder(r, msgpackHandle)
	rs := f.store.NewRestorer()
	for {
		var rt uint8
		if err := dec.Decode(&rt); err != nil {
			rs.Abort()
			if errors.Is(err, io.EOF) {
				return errors.New("raft: snapshot ends without its end mark")
			}
			return fmt.Errorf("reading snapshot record type: %w", err)
		}
		if rt == 0 {
			break
		}
		rec, err := discovery.NewRecord(discovery.RecordType(rt))
		if err == nil {
			err = dec.Decode(rec)
		}
		if err == nil {
			err = rs.Add(discovery.RecordType(rt), rec)
		}
		if err != nil {
			rs.Abort()
			return fmt.Errorf("restoring snapshot: %w", err)
		}
	}
	if f.hist == nil {
		rs.Commit()
	} else {
		f.hist.mu.Lock()
		rs.Commit()
		// Every change up to the restored catalog's index is in it, and
		// none is in the history: a replica behind it takes a snapshot.
		f.hist.resetLocked(f.store.LastIndex())
		f.hist.mu.Unlock()
	}
	f.setApplied(f.store.LastIndex())
	return nil
}
