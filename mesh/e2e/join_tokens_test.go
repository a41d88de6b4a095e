package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
	"github.com/vmesh/vmesh/raft"
)

// TestJoinTokens: a join token admits one join unless made for more; a
// used, a revoked, an expired and a wrong token are refused, each saying
// why, and so is a host that claims the name and ID of a live node; a
// token on argv is refused before it reaches the agent; `vmesh token
// list` shows every token's state and none of their secrets.
func TestJoinTokens(t *testing.T) {
	skipShort(t)
	t.Parallel()
	n1 := newNode(t, "n1", "127.15.0.1").start("-bootstrap")
	testkit.WaitFor(t, 15*time.Second, "n1 leads", func() bool { return n1.leader() != "" })
	// create runs `vmesh token create` and reads the token's ID and expiry
	// from its stderr.
	create := func(args ...string) (token, id string, expires time.Time) {
		t.Helper()
		code, out, errs := n1.cli(append([]string{"token", "create"}, args...)...)
		if code != 0 {
			t.Fatalf("token create %v: %d %s", args, code, errs)
		}
		if _, rest, ok := strings.Cut(errs, "token "); ok {
			id, _, _ = strings.Cut(rest, " ")
		}
		if _, at, ok := strings.Cut(errs, "expires at "); ok {
			expires, _ = time.Parse(time.RFC3339, strings.TrimSpace(at))
		}
		if id == "" || expires.IsZero() {
			t.Fatalf("token create %v printed no ID or expiry: %q", args, errs)
		}
		return strings.TrimSpace(out), id, expires
	}
	// refused runs `vmesh join` on n with token in a file and wants exit 1
	// with want on stderr.
	refused := func(what string, n *node, token, want string) {
		t.Helper()
		code, _, errs := n.cli("join", n1.clusterAddr(), "-token-file", writeToken(t, token))
		if code != 1 || !strings.Contains(errs, want) {
			t.Errorf("%s: vmesh join = exit %d, stderr %q; want exit 1 and %q", what, code, errs, want)
		} else {
			t.Logf("%s: %s", what, strings.TrimSpace(errs))
		}
	}

	single, singleID, singleExp := create() // the defaults: one use, 1 h
	if d := time.Until(singleExp); d < 58*time.Minute || d > 62*time.Minute {
		t.Errorf("a default token expires in %s; want 1h", d)
	}
	n2 := newNode(t, "n2", "127.15.0.2").start()
	n3 := newNode(t, "n3", "127.15.0.3").start()

	// On argv the token is refused before anything is sent, and not echoed.
	code, _, errs := n3.cli("join", n1.clusterAddr(), "-token", single)
	if code != 2 || !strings.Contains(errs, "-token-file") || !strings.Contains(errs, "VMESH_JOIN_TOKEN") || strings.Contains(errs, single) {
		t.Errorf("join -token T = exit %d %q; want exit 2 pointing at -token-file and VMESH_JOIN_TOKEN", code, errs)
	}

	if code, _, errs := n2.cli("join", n1.clusterAddr(), "-token-file", writeToken(t, single)); code != 0 {
		t.Fatalf("first join with a single-use token: %d %s", code, errs)
	}
	refused("second use", n3, single, "join token already used")

	revoked, revokedID, _ := create("-ttl", "1h")
	if code, out, errs := n1.cli("token", "revoke", revokedID); code != 0 || !strings.Contains(out, revokedID) {
		t.Fatalf("token revoke: %d %s %s", code, out, errs)
	}
	refused("revoked", n3, revoked, "join token revoked")

	expired, expiredID, expiresAt := create("-ttl", "1s")
	testkit.WaitFor(t, 5*time.Second, "the 1 s token's expiry", func() bool { return !time.Now().Before(expiresAt) })
	refused("expired", n3, expired, "join token expired at "+expiresAt.UTC().Format(time.RFC3339))

	p, err := raft.ParseToken(revoked)
	if err != nil {
		t.Fatal(err)
	}
	refused("wrong secret", n3, raft.Token{ID: p.ID, Secret: "guess", Fingerprint: p.Fingerprint}.String(), "no such join token, or a wrong secret")

	// An impostor with n2's name and node ID (both visible in the
	// catalog) and a good token gets nothing while n2 heartbeats.
	testkit.WaitFor(t, 20*time.Second, "n2 in the catalog, heartbeating", func() bool {
		var ms []struct {
			Name          string
			LastContactMs int64
		}
		testkit.GetJSON(t, n1.httpAddr(), "/v1/vmesh/members", &ms)
		for _, m := range ms {
			if m.Name == "n2" && m.LastContactMs > 0 {
				return true
			}
		}
		return false
	})
	impostor := newNode(t, "n2", "127.15.0.4")
	if err := os.WriteFile(filepath.Join(impostor.dataDir, "node-id"), []byte(n2.nodeID()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	impostor.start()
	good, goodID, _ := create()
	refused("a live node's name and ID", impostor, good, `node name "n2" belongs to a live node`)
	// That refusal spent nothing: the same token admits n3.
	if code, _, errs := n3.cli("join", n1.clusterAddr(), "-token-file", writeToken(t, good)); code != 0 {
		t.Fatalf("join with the token the impostor was refused with: %d %s", code, errs)
	}
	testkit.WaitFor(t, 20*time.Second, "n3 knows the leader", func() bool { return n3.leader() == n1.clusterAddr() })
	if impostor.leader() != "" {
		t.Error("the impostor knows a leader")
	}

	code, out, errs := n1.cli("token", "list")
	if code != 0 {
		t.Fatalf("token list: %d %s", code, errs)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		if f := strings.Fields(line); len(f) == 5 {
			rows[f[0]] = f[3] + " " + f[4]
		}
	}
	for id, want := range map[string]string{singleID: "0/1 used", revokedID: "1/1 revoked", expiredID: "1/1 expired", goodID: "0/1 used"} {
		if rows[id] != want {
			t.Errorf("token list shows %s as %q, want %q:\n%s", id, rows[id], want, out)
		}
	}
	for _, tok := range []string{single, revoked, expired, good} {
		if secret := strings.Split(tok, ".")[2]; strings.Contains(out, secret) {
			t.Errorf("token list shows a secret:\n%s", out)
		}
	}
}
