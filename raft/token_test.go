package raft

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
)

func TestParseTokenRoundTrip(t *testing.T) {
	fp := strings.Repeat("ab", 32)
	for _, tok := range []Token{
		{ID: "0123456789abcdef", Secret: "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlYw", Fingerprint: fp},
		{ID: "x", Secret: "y", Fingerprint: strings.Repeat("0", 64)},
		// CreateToken's secrets are base64url: '-' and '_' must survive.
		{ID: "id", Secret: "a-b_c", Fingerprint: fp},
	} {
		s := tok.String()
		if !strings.HasPrefix(s, "vmesh1.") {
			t.Errorf("%+v.String() = %q; want the vmesh1. prefix", tok, s)
		}
		got, err := ParseToken(s)
		if err != nil {
			t.Errorf("ParseToken(%q): %v", s, err)
			continue
		}
		if got != tok {
			t.Errorf("ParseToken(%q) = %+v; want %+v", s, got, tok)
		}
		// Surrounding white space, as pasted from a terminal, is fine.
		if got, err := ParseToken(" \t" + s + "\n"); err != nil || got != tok {
			t.Errorf("ParseToken(%q with white space) = %+v, %v; want %+v", s, got, err, tok)
		}
	}
}

func TestParseTokenRejects(t *testing.T) {
	fp := strings.Repeat("ab", 32)
	for _, tc := range []struct{ name, in string }{
		{"empty", ""},
		{"garbage", "hello"},
		{"wrong prefix", "vmesh2.id.secret." + fp},
		{"no prefix", "id.secret." + fp + ".x"},
		{"prefix in another case", "VMESH1.id.secret." + fp},
		{"three parts", "vmesh1.id." + fp},
		{"five parts", "vmesh1.id.secret.extra." + fp},
		{"empty id", "vmesh1..secret." + fp},
		{"empty secret", "vmesh1.id.." + fp},
		{"empty fingerprint", "vmesh1.id.secret."},
		{"short fingerprint", "vmesh1.id.secret." + fp[:62]},
		{"long fingerprint", "vmesh1.id.secret." + fp + "ab"},
		{"fingerprint not hex", "vmesh1.id.secret." + strings.Repeat("zz", 32)},
		{"fingerprint with one non-hex char", "vmesh1.id.secret." + fp[:63] + "g"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := ParseToken(tc.in)
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("ParseToken(%q) = %+v, %v; want ErrInvalidToken", tc.in, tok, err)
			}
			if tok != (Token{}) {
				t.Errorf("ParseToken(%q) returned %+v with its error; want the zero Token", tc.in, tok)
			}
		})
	}
}

// clusterLeader is a one-node cluster on a loopback port, leading, with its
// CA in the catalog: what a joiner reaches.
func clusterLeader(t *testing.T) *Server {
	t.Helper()
	dir := t.TempDir()
	id, ca, err := BootstrapIdentity(dir, "test.local", "n1")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(Config{
		NodeID: "n1-id", Addr: "127.0.0.1:0", DataDir: dir, Bootstrap: true,
		Logger:  testkit.Logger(t).With("component", "raft"),
		Cluster: &ClusterConfig{Identity: id, Bind: "127.0.0.1:0", Voters: 1, LocalCA: ca},
	}, discovery.NewStore())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	hurryElection(t, s)
	waitLeader(t, s)
	testkit.WaitFor(t, 5*time.Second, "the CA in the catalog", func() bool {
		_, root, _ := s.store.CA(nil)
		return root != nil
	})
	return s
}

func joinAs(t *testing.T, s *Server, token, name string) error {
	_, err := Join(context.Background(), JoinParams{Addr: s.Addr(), Token: token, NodeName: name, NodeID: name + "-id", DataDir: t.TempDir()})
	return err
}

func TestCreateTokenRefusesBadLimits(t *testing.T) {
	s := clusterLeader(t)
	ctx := context.Background()
	for _, tc := range []struct {
		ttl  time.Duration
		uses int
		want string
	}{
		{0, 1, "ttl"}, {-time.Second, 1, "ttl"}, {discovery.MaxJoinTokenTTL + time.Second, 1, "ttl"},
		{time.Hour, 0, "uses"}, {time.Hour, -1, "uses"}, {time.Hour, discovery.MaxJoinTokenUses + 1, "uses"},
	} {
		if _, _, err := s.CreateToken(ctx, tc.ttl, tc.uses); !errors.Is(err, discovery.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CreateToken(%s, %d) = %v; want ErrInvalid naming %s", tc.ttl, tc.uses, err, tc.want)
		}
	}
	if ts, _ := s.Tokens(); len(ts) != 0 {
		t.Errorf("refused creates stored %+v", ts)
	}
}

// TestJoinTokenSingleUseRace: two joiners present one single-use token at
// once; the leader spends the use through raft before signing, so exactly
// one gets a certificate and the other is told the token is used.
func TestJoinTokenSingleUseRace(t *testing.T) {
	s := clusterLeader(t)
	for round := range 5 {
		tok, info, err := s.CreateToken(context.Background(), time.Hour, 1)
		if err != nil {
			t.Fatal(err)
		}
		if info.UsesLeft != 1 || info.Uses != 1 {
			t.Fatalf("default token = %+v; want one use", info)
		}
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i := range errs {
			wg.Go(func() {
				dir := t.TempDir()
				_, errs[i] = Join(context.Background(), JoinParams{Addr: s.Addr(), Token: tok,
					NodeName: fmt.Sprintf("r%d-%d", round, i), NodeID: fmt.Sprintf("r%d-%d-id", round, i), DataDir: dir})
			})
		}
		wg.Wait()
		ok, used := 0, 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, ErrJoinRefused) && strings.Contains(err.Error(), "join token already used"):
				used++
			default:
				t.Errorf("round %d: unexpected join error %v", round, err)
			}
		}
		if ok != 1 || used != 1 {
			t.Fatalf("round %d: %d joins succeeded, %d refused as used (%v); want one each", round, ok, used, errs)
		}
		got, _ := s.store.Token(info.ID)
		if got.UsesLeft != 0 {
			t.Errorf("round %d: token after the race has %d uses left", round, got.UsesLeft)
		}
	}
}

func TestJoinTokenRefusals(t *testing.T) {
	s := clusterLeader(t)
	ctx := context.Background()
	mk := func(uses int) (string, discovery.JoinTokenInfo) {
		tok, info, err := s.CreateToken(ctx, time.Hour, uses)
		if err != nil {
			t.Fatal(err)
		}
		return tok, info
	}
	two, _ := mk(2)
	if err := joinAs(t, s, two, "a1"); err != nil {
		t.Fatalf("first use of a 2-use token: %v", err)
	}
	if err := joinAs(t, s, two, "a2"); err != nil {
		t.Fatalf("second use of a 2-use token: %v", err)
	}
	revoked, rinfo := mk(1)
	if _, err := s.RevokeToken(ctx, rinfo.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RevokeToken(ctx, "nope"); !errors.Is(err, discovery.ErrNotFound) {
		t.Errorf("revoking an unknown token = %v; want ErrNotFound", err)
	}
	// In the catalog: n1 (the leader, always live), busy (heartbeating)
	// and ghost (silent).
	for _, n := range []string{"n1", "busy", "ghost"} {
		if _, err := s.Apply(ctx, discovery.RegisterNodeRequest{Node: discovery.Node{Name: n, ID: n + "-id", Address: "127.0.0.1"}}); err != nil {
			t.Fatal(err)
		}
	}
	s.cluster.live.mark("busy", "busy-id", "127.0.0.1:1", time.Now())
	good, _ := mk(1)
	parsed, _ := ParseToken(good)
	wrongSecret := Token{ID: parsed.ID, Secret: "x", Fingerprint: parsed.Fingerprint}.String()
	unknown := Token{ID: "0000", Secret: parsed.Secret, Fingerprint: parsed.Fingerprint}.String()
	for _, tc := range []struct{ name, token, node, want string }{
		{"third use", two, "a3", "join token already used"},
		{"revoked", revoked, "a4", "join token revoked"},
		{"wrong secret", wrongSecret, "a5", "no such join token, or a wrong secret"},
		{"unknown", unknown, "a6", "no such join token, or a wrong secret"},
		// A heartbeating node's name is not for anyone, whatever ID: not
		// even the ID it has, which the catalog shows to every reader.
		{"live leader's name", good, "n1", `node name "n1" belongs to a live node`},
		{"live node's name", good, "busy", `node name "busy" belongs to a live node`},
		{"live node's name and ID", good, "busy=busy-id", `node name "busy" belongs to a live node`},
		// A silent node's name stays its own until it leaves or is reaped.
		{"silent node's name, another ID", good, "ghost", `node name "ghost" is taken by node ghost-id`},
	} {
		name, id, _ := strings.Cut(tc.node, "=")
		if id == "" {
			id = "joiner-" + name
		}
		_, err := Join(ctx, JoinParams{Addr: s.Addr(), Token: tc.token, NodeName: name, NodeID: id, DataDir: t.TempDir()})
		if !errors.Is(err, ErrJoinRefused) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: join = %v; want refused with %q", tc.name, err, tc.want)
		}
	}
	// None of the refusals spent the good token's use, and the silent
	// node itself may come back with it (same name, same ID).
	if _, err := Join(ctx, JoinParams{Addr: s.Addr(), Token: good, NodeName: "ghost", NodeID: "ghost-id", DataDir: t.TempDir()}); err != nil {
		t.Errorf("the good token after refusals, for the silent node: %v", err)
	}
	ts, err := s.Tokens()
	if err != nil || len(ts) != 3 {
		t.Fatalf("Tokens() = %+v, %v; want 3", ts, err)
	}
	for _, ti := range ts {
		if ti.UsesLeft != 0 && !ti.Revoked {
			t.Errorf("token %+v still has uses", ti)
		}
	}
}

// TestTokenUseFSM: the FSM's verdicts, with the leader's clock in the
// command.
func TestTokenUseFSM(t *testing.T) {
	st := discovery.NewStore()
	if err := st.TokenCreate(1, &discovery.JoinToken{ID: "t", SecretHash: []byte{1}, CreatedAt: 100, ExpiresAt: 200, Uses: 2, UsesLeft: 2}); err != nil {
		t.Fatal(err)
	}
	if err := st.TokenCreate(2, &discovery.JoinToken{ID: "legacy", SecretHash: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id   string
		now  int64
		want error
	}{
		{"t", 150, nil},
		{"t", 200, discovery.ErrTokenExpired},
		{"t", 199, nil},
		{"t", 199, discovery.ErrTokenUsed},
		{"legacy", 150, discovery.ErrTokenExpired}, // written before tokens expired: admits no one
		{"none", 150, discovery.ErrTokenUnknown},
	} {
		if err := st.TokenUse(10, tc.id, tc.now); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("TokenUse(%s, %d) = %v; want %v", tc.id, tc.now, err, tc.want)
		}
	}
	if err := st.TokenRevoke(11, "t", 150); err != nil {
		t.Fatal(err)
	}
	if err := st.TokenUse(12, "t", 150); !errors.Is(err, discovery.ErrTokenRevoked) {
		t.Errorf("TokenUse after revoke = %v; want ErrTokenRevoked", err)
	}
}

// TestJoinDepartedName: a live node's name is refused; once that node has
// left (deregistered), its name is free for a new node with another ID,
// even while the leader still remembers its last heartbeat.
func TestJoinDepartedName(t *testing.T) {
	s := clusterLeader(t)
	ctx := context.Background()
	if _, err := s.Apply(ctx, discovery.RegisterNodeRequest{Node: discovery.Node{Name: "web-01", ID: "old-id", Address: "127.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	s.cluster.live.mark("web-01", "old-id", "127.0.0.1:1", time.Now())
	tok, _, err := s.CreateToken(ctx, time.Hour, 1)
	if err != nil {
		t.Fatal(err)
	}
	join := func() error {
		_, err := Join(ctx, JoinParams{Addr: s.Addr(), Token: tok, NodeName: "web-01", NodeID: "new-id", DataDir: t.TempDir()})
		return err
	}
	if err := join(); err == nil || !strings.Contains(err.Error(), `node name "web-01" belongs to a live node`) {
		t.Fatalf("join as a live node = %v; want refused", err)
	}
	if _, err := s.Apply(ctx, discovery.DeregisterNodeRequest{Node: "web-01"}); err != nil {
		t.Fatal(err)
	}
	if err := join(); err != nil {
		t.Fatalf("join under a departed node's name = %v; want it admitted", err)
	}
}
