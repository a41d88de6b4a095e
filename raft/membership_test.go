package raft

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// openClusterLeader is a one-voter cluster on a real cluster port with a
// real CA and node certificate, leading. voters caps the voters, so that
// adding a peer that never answers (voters 1: as a nonvoter) commits.
func openClusterLeader(t *testing.T, voters int) (*Server, *CA) {
	t.Helper()
	return openClusterLeaderWith(t, ClusterConfig{Voters: voters})
}

// openClusterLeaderWith is openClusterLeader with cc's settings (its
// identity and address are the test's). It bootstraps a new CA unless
// cc.LocalCA holds one.
func openClusterLeaderWith(t *testing.T, cc ClusterConfig) (*Server, *CA) {
	t.Helper()
	dir := t.TempDir()
	var id *Identity
	ca := cc.LocalCA
	if ca == nil {
		var err error
		if id, ca, err = BootstrapIdentity(dir, "membership.test", "leader"); err != nil {
			t.Fatal(err)
		}
	} else {
		id = testIdentity(t, ca, "leader")
		if err := id.save(dir); err != nil {
			t.Fatal(err)
		}
	}
	cc.Identity, cc.Bind, cc.LocalCA = id, "127.0.0.1:0", ca
	s, err := Open(Config{
		NodeID: "id-leader", Addr: "127.0.0.1:0", DataDir: dir, Bootstrap: true,
		Logger:  testkit.Logger(t).With("component", "raft"),
		Cluster: &cc,
	}, discovery.NewStore())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	hurryElection(t, s)
	waitLeader(t, s)
	return s, ca
}

// callerCtx is the context of a cluster RPC from the node certificate of
// name, arriving from ip.
func callerCtx(t *testing.T, ca *CA, name, ip string) context.Context {
	t.Helper()
	cert, _ := idTestNode(t, ca, name)
	return peer.NewContext(context.Background(), &peer.Peer{
		Addr:     &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000},
		AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}},
	})
}

func wantDenied(t *testing.T, what string, err error, words string) {
	t.Helper()
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), words) {
		t.Errorf("%s: got %v; want PermissionDenied naming %q", what, err, words)
	}
	if !errors.Is(rpcErr(err), ErrPermissionDenied) {
		t.Errorf("%s: rpcErr(%v) does not wrap ErrPermissionDenied", what, err)
	}
}

// TestMembershipRPCsActOnTheCallerOnly: AddPeer and Leave take the node
// from the caller's certificate and refuse, saying why, any request about
// another node's ID or address.
func TestMembershipRPCsActOnTheCallerOnly(t *testing.T) {
	s, ca := openClusterLeader(t, 1)
	ctx := context.Background()
	if _, err := s.Apply(ctx, discovery.RegisterNodeRequest{Node: discovery.Node{Name: "worker", ID: "id-worker", Address: "127.0.0.2"}}); err != nil {
		t.Fatal(err)
	}
	worker := callerCtx(t, ca, "worker", "127.0.0.2")
	ghost := callerCtx(t, ca, "ghost", "127.0.0.3")

	_, err := s.rpcAddPeer(ghost, &AddPeerRequest{NodeID: "id-ghost", Addr: "127.0.0.3:7400"})
	wantDenied(t, "AddPeer of a node the catalog does not hold", err, `holds no node "ghost"`)
	_, err = s.rpcAddPeer(worker, &AddPeerRequest{NodeID: "id-phantom", Addr: "127.0.0.2:7400"})
	wantDenied(t, "AddPeer of another node ID (a phantom voter)", err, "which is node ID id-worker, not id-phantom")
	_, err = s.rpcAddPeer(worker, &AddPeerRequest{NodeID: "id-worker", Addr: "127.0.0.9:7400"})
	wantDenied(t, "AddPeer at an address the caller does not call from", err, "is not where node \"worker\" calls from")
	_, err = s.rpcAddPeer(worker, &AddPeerRequest{NodeID: "id-leader", Addr: "127.0.0.2:7400"})
	wantDenied(t, "AddPeer moving the leader's address", err, "which is node ID id-worker, not id-leader")
	if _, err := s.Apply(ctx, discovery.RegisterNodeRequest{Node: discovery.Node{Name: "squatter", ID: "id-squatter", Address: "127.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	_, err = s.rpcAddPeer(callerCtx(t, ca, "squatter", "127.0.0.1"), &AddPeerRequest{NodeID: "id-squatter", Addr: s.Addr()})
	wantDenied(t, "AddPeer at another server's address", err, "belongs to server id-leader")

	_, err = s.rpcLeave(worker, &LeaveRequest{NodeID: "id-leader"})
	wantDenied(t, "Leave naming another node", err, "a node acts only on itself")
	_, err = s.rpcLeave(ghost, &LeaveRequest{NodeID: "id-worker"})
	wantDenied(t, "Leave from a node the catalog does not hold", err, `holds no node "ghost"`)

	// Nothing changed: one server, the leader.
	if peers, _ := s.Peers(); len(peers) != 1 || peers[0] != s.Addr() {
		t.Fatalf("raft voters after refused calls = %v; want only %s", peers, s.Addr())
	}
	// The caller's own ID at its own address is added (as a nonvoter: the
	// cap is one voter).
	resp, err := s.rpcAddPeer(worker, &AddPeerRequest{NodeID: "id-worker", Addr: "127.0.0.2:7400"})
	if err != nil || resp.Voter {
		t.Fatalf("AddPeer of the caller itself = %+v, %v; want added as a nonvoter", resp, err)
	}
	if !s.InConfiguration() {
		t.Fatal("the leader is not in its own configuration")
	}
}

// TestLeaveRefusedBeforeAnythingChanges: a leave that would break quorum
// is refused at once, with the reason, before any leadership transfer; the
// refusal is a verdict, not a "not the leader" to retry.
func TestLeaveRefusedBeforeAnythingChanges(t *testing.T) {
	s, _ := openClusterLeader(t, 3)
	start := time.Now()
	err := s.Leave(context.Background(), false)
	if !errors.Is(err, ErrQuorum) || !strings.Contains(err.Error(), "needs 1 to accept writes") {
		t.Fatalf("Leave of the only voter = %v; want ErrQuorum with the numbers", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("refusal took %s; want under 1 s", d)
	}
	if !s.IsLeader() || s.leaving.Load() {
		t.Fatalf("after a refused leave: leader=%v leaving=%v; want still leading, not leaving", s.IsLeader(), s.leaving.Load())
	}

	refused := refusedStatus(refusedQuorum, "raft: leaving would break quorum: x")
	if isNotLeader(refused) {
		t.Fatal("a quorum refusal reads as 'not the leader' and would be retried")
	}
	if !errors.Is(rpcErr(refused), ErrQuorum) {
		t.Fatalf("rpcErr(quorum refusal) = %v; want ErrQuorum", rpcErr(refused))
	}
	if !isNotLeader(status.Error(codes.FailedPrecondition, "not the leader")) {
		t.Fatal("a plain FailedPrecondition no longer reads as 'not the leader'")
	}
}

// TestRaftFilesArePrivate: the log, the snapshots and the key files hold
// the catalog and the cluster's keys: owner-only.
func TestRaftFilesArePrivate(t *testing.T) {
	s, _ := openClusterLeader(t, 1)
	if _, err := s.Apply(context.Background(), kvCmd("k", "v")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	dir := s.dataDir
	var files, dirs []string
	files = append(files, filepath.Join(dir, "raft", "raft.db"),
		filepath.Join(tlsDir(dir), nodeKeyFile), filepath.Join(tlsDir(dir), nodeFile), filepath.Join(tlsDir(dir), caFile))
	snapDirs, _ := filepath.Glob(filepath.Join(dir, "raft", "snapshots", "*"))
	if len(snapDirs) == 0 {
		t.Fatal("no snapshot written")
	}
	dirs = append(dirs, filepath.Join(dir, "raft"), filepath.Join(dir, "raft", "snapshots"), tlsDir(dir))
	for _, d := range snapDirs {
		dirs = append(dirs, d)
		files = append(files, filepath.Join(d, "state.bin"), filepath.Join(d, "meta.json"))
	}
	check := func(path string, want os.FileMode) {
		fi, err := os.Stat(path)
		if err != nil {
			t.Error(err)
			return
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o; want %o", path, got, want)
		}
	}
	for _, f := range files {
		check(f, 0o600)
	}
	for _, d := range dirs {
		check(d, 0o700)
	}
}
