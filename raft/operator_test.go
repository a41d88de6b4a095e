package raft

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
)

func kvValue(t *testing.T, s *discovery.Store, key string) string {
	t.Helper()
	_, e, err := s.KVGet(nil, key)
	if err != nil {
		t.Fatal(err)
	}
	if e == nil {
		return "<none>"
	}
	return string(e.Value)
}

// TestSnapshotSaveRestore: an operator's snapshot is a Consul-style
// archive; restoring it brings the saved state back on the running
// server (which stays the leader and keeps taking writes), and a bad
// archive is refused, naming what is wrong, with nothing changed.
func TestSnapshotSaveRestore(t *testing.T) {
	store := discovery.NewStore()
	s := openServer(t, t.TempDir(), store, serverOpts{})
	defer s.Close()
	hurryElection(t, s)
	waitLeader(t, s)
	ctx := context.Background()
	for _, cmd := range []discovery.Command{nodeCmd("n1"), kvCmd("app/a", "saved"),
		discovery.RegisterServiceRequest{Instance: discovery.Instance{Node: "n1", ID: "web-1", Service: "web", Port: 80}}} {
		if _, err := s.Apply(ctx, cmd); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	idx, err := s.SaveSnapshot(&buf)
	if err != nil || idx == 0 {
		t.Fatalf("save: %d %v", idx, err)
	}
	archive := buf.Bytes()
	// Nothing written since: a second save sends the same state.
	var again bytes.Buffer
	if idx2, err := s.SaveSnapshot(&again); err != nil || idx2 != idx {
		t.Fatalf("second save: %d %v, want index %d", idx2, err, idx)
	}

	for _, cmd := range []discovery.Command{kvCmd("app/a", "changed"), kvCmd("app/b", "new"),
		discovery.DeregisterServiceRequest{Node: "n1", ServiceID: "web-1"}} {
		if _, err := s.Apply(ctx, cmd); err != nil {
			t.Fatal(err)
		}
	}

	// Bad archives: refused, nothing changed.
	before := records(t, store)
	corrupt := bytes.Clone(archive)
	corrupt[len(corrupt)/2] ^= 0xff
	for name, bad := range map[string][]byte{
		"not gzip":       []byte("hello"),
		"damaged":        corrupt,
		"wrong checksum": rewriteArchive(t, archive, "state.bin", func(b []byte) []byte { return append(bytes.Clone(b), 0) }),
		"bad state":      rewriteArchiveSum(t, archive, "state.bin", []byte{1, 0xc1}),
	} {
		if err := s.RestoreSnapshot(ctx, bad); !errors.Is(err, ErrBadArchive) {
			t.Errorf("%s: %v, want ErrBadArchive", name, err)
		}
	}
	if after := records(t, store); !reflect.DeepEqual(before, after) {
		t.Fatal("a refused restore changed the catalog")
	}

	if err := s.RestoreSnapshot(ctx, archive); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if got := kvValue(t, store, "app/a"); got != "saved" {
		t.Errorf("app/a = %q after restore, want saved", got)
	}
	if got := kvValue(t, store, "app/b"); got != "<none>" {
		t.Errorf("app/b = %q after restore, want none", got)
	}
	if _, in, _ := store.Instance(nil, "n1", "web-1"); in == nil {
		t.Error("web-1 not back after restore")
	}
	// Still the leader, still writing.
	if _, err := s.Apply(ctx, kvCmd("app/c", "after")); err != nil {
		t.Fatalf("write after restore: %v", err)
	}
	if got := kvValue(t, store, "app/c"); got != "after" {
		t.Errorf("app/c = %q", got)
	}
}

// rewriteArchive changes one file of an archive, leaving SHA256SUMS.
func rewriteArchive(t *testing.T, archive []byte, name string, change func([]byte) []byte) []byte {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	tw := tar.NewWriter(zw)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		if h.Name == name {
			data = change(data)
		}
		tw.WriteHeader(&tar.Header{Name: h.Name, Mode: 0o600, Size: int64(len(data)), ModTime: time.Now()})
		tw.Write(data)
	}
	tw.Close()
	zw.Close()
	return out.Bytes()
}

// rewriteArchiveSum writes a new archive with state as state.bin and
// consistent checksums and size: only the state itself is bad.
func rewriteArchiveSum(t *testing.T, archive []byte, _ string, state []byte) []byte {
	t.Helper()
	meta, _, err := readArchive(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := writeArchive(&out, meta, bytes.NewReader(state)); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestCatalogRegisterFSM: the catalog's own writes make external nodes,
// which the FSM refuses to turn an agent's node into, and which survive
// a snapshot.
func TestCatalogRegisterFSM(t *testing.T) {
	store := discovery.NewStore()
	s := openServer(t, t.TempDir(), store, serverOpts{})
	defer s.Close()
	hurryElection(t, s)
	waitLeader(t, s)
	ctx := context.Background()
	if _, err := s.Apply(ctx, nodeCmd("agent1")); err != nil {
		t.Fatal(err)
	}
	reg := discovery.CatalogRegisterRequest{
		Node:    discovery.Node{Name: "ext", Address: "192.0.2.1"},
		Service: &discovery.Instance{ID: "db", Service: "db", Port: 5432},
		Checks:  []*discovery.Check{{CheckID: "db-up", Name: "db-up", Status: discovery.HealthPassing, ServiceID: "db"}},
	}
	if _, err := s.Apply(ctx, reg); err != nil {
		t.Fatal(err)
	}
	_, n, ins, _ := store.Node(nil, "ext")
	if n == nil || !n.External || len(ins) != 1 {
		t.Fatalf("ext = %+v %v", n, ins)
	}
	hijack := reg
	hijack.Node.Name = "agent1"
	if _, err := s.Apply(ctx, hijack); !errors.Is(err, discovery.ErrAgentNode) {
		t.Errorf("register on an agent's node: %v, want ErrAgentNode", err)
	}
	if _, err := s.Apply(ctx, discovery.CatalogDeregisterRequest{Node: "agent1"}); !errors.Is(err, discovery.ErrAgentNode) {
		t.Errorf("deregister an agent's node: %v, want ErrAgentNode", err)
	}
	if _, n, ins, _ := store.Node(nil, "agent1"); n == nil || n.External || len(ins) != 0 {
		t.Errorf("agent1 = %+v %v", n, ins)
	}
	var buf bytes.Buffer
	if _, err := s.SaveSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	_, state, err := readArchive(&buf)
	if err != nil {
		t.Fatal(err)
	}
	f := newFSM(discovery.NewStore(), s.logger)
	f.hist = nil
	if err := f.Restore(io.NopCloser(bytes.NewReader(state))); err != nil {
		t.Fatal(err)
	}
	if _, n, _, _ := f.store.Node(nil, "ext"); n == nil || !n.External {
		t.Errorf("ext after a snapshot round trip = %+v", n)
	}
}

// TestAutopilotConfigInRaft: autopilot reads the configuration stored in
// the catalog on every pass, the default until one is set.
func TestAutopilotConfigInRaft(t *testing.T) {
	store := discovery.NewStore()
	s := openServer(t, t.TempDir(), store, serverOpts{})
	defer s.Close()
	hurryElection(t, s)
	waitLeader(t, s)
	d := &apDelegate{s: s}
	if got := d.AutopilotConfig(); !got.CleanupDeadServers || got.LastContactThreshold != 2*time.Second {
		t.Errorf("default = %+v", got)
	}
	c := discovery.DefaultAutopilotConfig()
	c.CleanupDeadServers, c.LastContactThreshold, c.MinQuorum = false, 700*time.Millisecond, 3
	if _, err := s.Apply(context.Background(), discovery.AutopilotSetRequest{Config: c, CAS: true, Index: 0}); err != nil {
		t.Fatal(err)
	}
	if got := d.AutopilotConfig(); got.CleanupDeadServers || got.LastContactThreshold != 700*time.Millisecond || got.MinQuorum != 3 {
		t.Errorf("after set = %+v", got)
	}
	if _, err := s.Apply(context.Background(), discovery.AutopilotSetRequest{Config: c, CAS: true, Index: 0}); !errors.Is(err, discovery.ErrCASConflict) {
		t.Errorf("stale CAS: %v", err)
	}
	c.LastContactThreshold = 0
	if _, err := s.Apply(context.Background(), discovery.AutopilotSetRequest{Config: c}); !errors.Is(err, discovery.ErrInvalid) {
		t.Errorf("zero threshold: %v", err)
	}
}

// TestHistoryResetBackwards: an operator's restore takes the catalog to
// an older index; every subscriber, even one current to the newest
// entry, is dropped and takes a snapshot when it comes back, and the
// history goes on from the newest index.
func TestHistoryResetBackwards(t *testing.T) {
	h := newHistory(8, testkit.Discard())
	store := discovery.NewStore()
	buf, err := encodeCommand(nodeCmd("n1"))
	if err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	for i := uint64(1); i <= 5; i++ {
		h.recordLocked(i*10, buf, nil)
	}
	h.mu.Unlock()
	sub, snap := h.subscribe(50, store)
	if snap != nil {
		t.Fatal("a current subscriber got a snapshot")
	}
	h.mu.Lock()
	h.resetLocked(20) // the restored catalog's index
	h.mu.Unlock()
	select {
	case <-sub.dropped:
	default:
		t.Fatal("a subscriber current to 50 was kept after a restore to 20")
	}
	sub2, snap := h.subscribe(50, store)
	if snap == nil {
		t.Fatal("a replica at 50 resumed after a restore to 20, without a snapshot")
	}
	if got := sub2.cursor.Load(); got != 50 {
		t.Errorf("cursor after the snapshot = %d, want 50 (the newest index)", got)
	}
}
