package mesh

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/vmesh/vmesh/lab/testkit"
)

// sessionAgent is an in-process agent and a consul/api client on it,
// once the leader keeps the agent's node check (the serfHealth that
// sessions name by default) passing.
func sessionAgent(t *testing.T) (*Agent, *api.Client, string) {
	t.Helper()
	a := startAgent(t, testConfig(t))
	client, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "the node check passing", func() bool {
		checks, _, err := client.Health().Node("node-a", nil)
		if err != nil {
			return false
		}
		for _, c := range checks {
			if c.CheckID == "serfHealth" && c.Status == api.HealthPassing {
				return true
			}
		}
		return false
	})
	return a, client, "http://" + a.HTTPAddr()
}

// rawSession creates a session from a raw JSON body (consul/api cannot
// send a zero LockDelay) and returns its ID.
func rawSession(t *testing.T, base, body string) string {
	t.Helper()
	code, out := testkit.HTTPDo(t, http.MethodPut, base+"/v1/session/create", body)
	var resp struct{ ID string }
	if code != http.StatusOK || json.Unmarshal([]byte(out), &resp) != nil || resp.ID == "" {
		t.Fatalf("creating a session from %s: %d %s", body, code, out)
	}
	return resp.ID
}

// TestConsulLockHandover: consul/api's Lock with two holders on one key:
// the second waits while the first holds it, and gets it once the first's
// session is destroyed, within its lock-delay (none here) and a second.
func TestConsulLockHandover(t *testing.T) {
	_, client, base := sessionAgent(t)

	// The plain way first: a lock with its own session, held and let go.
	l, err := client.LockKey("service/simple")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Lock(nil); err != nil {
		t.Fatalf("Lock with a default session: %v", err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if err := l.Destroy(); err != nil {
		t.Fatalf("Destroy: %v", err)
	}

	const lockDelay = 0
	holderSess := rawSession(t, base, `{"Name":"holder","LockDelay":"0s"}`)
	waiterSess := rawSession(t, base, `{"Name":"waiter","LockDelay":"0s"}`)
	holder, _ := client.LockOpts(&api.LockOptions{Key: "service/leader", Value: []byte("one"), Session: holderSess})
	waiter, _ := client.LockOpts(&api.LockOptions{Key: "service/leader", Value: []byte("two"), Session: waiterSess})
	lost, err := holder.Lock(nil)
	if err != nil || lost == nil {
		t.Fatalf("the holder's Lock = %v, %v", lost, err)
	}
	type result struct {
		ch  <-chan struct{}
		err error
	}
	won := make(chan result, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		ch, err := waiter.Lock(stop)
		won <- result{ch, err}
	}()
	pair, _, err := client.KV().Get("service/leader", nil)
	if err != nil || pair == nil || pair.Session != holderSess || string(pair.Value) != "one" || pair.LockIndex != 1 {
		t.Fatalf("the lock key while held = %+v, %v; want the holder's", pair, err)
	}
	select {
	case r := <-won:
		t.Fatalf("the waiter got a held lock: %+v", r)
	default:
	}

	destroyed := time.Now()
	if _, err := client.Session().Destroy(holderSess, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-won:
		if r.err != nil || r.ch == nil {
			t.Fatalf("the waiter's Lock = %v, %v", r.ch, r.err)
		}
		t.Logf("handed over %s after the destroy", time.Since(destroyed).Round(time.Millisecond))
	case <-time.After(lockDelay + time.Second):
		t.Fatalf("the waiter did not get the lock within the lock-delay (%s) and a second", time.Duration(lockDelay))
	}
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("the holder was not told it lost the lock")
	}
	pair, _, _ = client.KV().Get("service/leader", nil)
	if pair == nil || pair.Session != waiterSess || string(pair.Value) != "two" || pair.LockIndex != 2 {
		t.Fatalf("the lock key after the handover = %+v; want the waiter's, LockIndex 2", pair)
	}
	if err := waiter.Unlock(); err != nil {
		t.Fatal(err)
	}
	if pair, _, _ = client.KV().Get("service/leader", nil); pair == nil || pair.Session != "" {
		t.Fatalf("after Unlock: %+v; want no session", pair)
	}
}

// TestConsulLockDelay: once a session that held a key is destroyed, the
// key refuses a new lock for the session's lock-delay, then takes one.
func TestConsulLockDelay(t *testing.T) {
	_, client, _ := sessionAgent(t)
	const lockDelay = 2 * time.Second
	holder, _, err := client.Session().Create(&api.SessionEntry{Name: "holder", LockDelay: lockDelay}, nil)
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := client.Session().Create(&api.SessionEntry{Name: "other"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kv := client.KV()
	if ok, _, err := kv.Acquire(&api.KVPair{Key: "job", Value: []byte("h"), Session: holder}, nil); err != nil || !ok {
		t.Fatalf("holder's Acquire = %v, %v", ok, err)
	}
	if ok, _, err := kv.Acquire(&api.KVPair{Key: "job", Session: other}, nil); err != nil || ok {
		t.Fatalf("Acquire of a held key = %v, %v; want false", ok, err)
	}
	destroyed := time.Now()
	if _, err := client.Session().Destroy(holder, nil); err != nil {
		t.Fatal(err)
	}
	if ok, _, err := kv.Acquire(&api.KVPair{Key: "job", Session: other}, nil); err != nil || ok {
		t.Fatalf("Acquire right after the holder's session ended = %v, %v; want false (lock-delay)", ok, err)
	}
	if pair, _, _ := kv.Get("job", nil); pair == nil || pair.Session != "" || string(pair.Value) != "h" {
		t.Fatalf("the released key = %+v; want its value, no session", pair)
	}
	testkit.WaitFor(t, lockDelay+time.Second, "the other session's Acquire after the lock-delay", func() bool {
		ok, _, err := kv.Acquire(&api.KVPair{Key: "job", Value: []byte("o"), Session: other}, nil)
		return err == nil && ok
	})
	// The catalog decides on the raft entries' time, which is never
	// before this test's: an acquire cannot have passed early.
	if took := time.Since(destroyed); took < lockDelay-5*time.Millisecond {
		t.Fatalf("acquired %s after the destroy, inside the %s lock-delay", took, lockDelay)
	}
	if pair, _, _ := kv.Get("job", nil); pair == nil || pair.Session != other || pair.LockIndex != 2 {
		t.Fatalf("after the lock-delay: %+v; want held by the other session", pair)
	}
}

// TestConsulSessionChecks: a session ends when one of its checks turns
// critical; with Behavior delete its keys go with it.
func TestConsulSessionChecks(t *testing.T) {
	_, client, _ := sessionAgent(t)
	agent := client.Agent()
	if err := agent.ServiceRegister(&api.AgentServiceRegistration{ID: "db-1", Name: "db", Port: 5432,
		Check: &api.AgentServiceCheck{CheckID: "db-ttl", TTL: "1h"}}); err != nil {
		t.Fatal(err)
	}
	// A critical check refuses the session.
	_, _, err := client.Session().Create(&api.SessionEntry{Name: "db", ServiceChecks: []api.ServiceCheck{{ID: "db-ttl"}}}, nil)
	if err == nil || !strings.Contains(err.Error(), `check "db-ttl"`) || !strings.Contains(err.Error(), "critical") {
		t.Fatalf("a session on a critical check: %v; want refused naming the check", err)
	}
	if err := agent.PassTTL("db-ttl", "up"); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "db-ttl passing in the catalog", func() bool {
		checks, _, _ := client.Health().Checks("db", nil)
		return len(checks) == 1 && checks[0].Status == api.HealthPassing
	})
	id, _, err := client.Session().Create(&api.SessionEntry{Name: "db", Behavior: api.SessionBehaviorDelete,
		ServiceChecks: []api.ServiceCheck{{ID: "db-ttl"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	info, _, err := client.Session().Info(id, nil)
	if err != nil || info == nil || !slices.Equal(info.NodeChecks, []string{"serfHealth"}) || len(info.ServiceChecks) != 1 ||
		info.ServiceChecks[0].ID != "db-ttl" || info.Behavior != "delete" || info.Node != "node-a" || info.LockDelay != 15*time.Second {
		t.Fatalf("session info = %+v, %v", info, err)
	}
	if ok, _, err := client.KV().Acquire(&api.KVPair{Key: "db/primary", Value: []byte("db-1"), Session: id}, nil); err != nil || !ok {
		t.Fatalf("Acquire = %v, %v", ok, err)
	}
	if err := agent.FailTTL("db-ttl", "down"); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "the session ended and its key deleted", func() bool {
		info, _, err := client.Session().Info(id, nil)
		pair, _, _ := client.KV().Get("db/primary", nil)
		return err == nil && info == nil && pair == nil
	})
}

// TestConsulSemaphore: consul/api's Semaphore with a limit of 2 and three
// contenders: two hold it, the third waits until one lets go.
func TestConsulSemaphore(t *testing.T) {
	_, client, _ := sessionAgent(t)
	var sems []*api.Semaphore
	for range 3 {
		s, err := client.SemaphorePrefix("service/workers", 2)
		if err != nil {
			t.Fatal(err)
		}
		sems = append(sems, s)
	}
	for i, s := range sems[:2] {
		if ch, err := s.Acquire(nil); err != nil || ch == nil {
			t.Fatalf("contender %d: Acquire = %v, %v", i, ch, err)
		}
	}
	got := make(chan error, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		ch, err := sems[2].Acquire(stop)
		if err == nil && ch == nil {
			err = fmt.Errorf("stopped")
		}
		got <- err
	}()
	holders := func() int {
		pair, _, err := client.KV().Get("service/workers/.lock", nil)
		if err != nil || pair == nil {
			return -1
		}
		var lock struct{ Holders map[string]bool }
		if json.Unmarshal(pair.Value, &lock) != nil {
			return -1
		}
		return len(lock.Holders)
	}
	if n := holders(); n != 2 {
		t.Fatalf("holders = %d; want 2", n)
	}
	select {
	case err := <-got:
		t.Fatalf("the third contender got a full semaphore: %v", err)
	default:
	}
	if err := sems[0].Release(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("the third contender's Acquire: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the third contender did not get the freed slot")
	}
	if n := holders(); n != 2 {
		t.Fatalf("holders after the handover = %d; want 2", n)
	}
	for _, s := range sems[1:] {
		if err := s.Release(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestConsulTxn: /v1/txn applies every operation or none; a failed one
// answers 409 with the failing operation's index.
func TestConsulTxn(t *testing.T) {
	_, client, base := sessionAgent(t)
	txn := client.Txn()
	ok, resp, _, err := txn.Txn(api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "cfg/a", Value: []byte("1")}},
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "cfg/b", Value: []byte("2"), Flags: 9}},
		{KV: &api.KVTxnOp{Verb: api.KVGet, Key: "cfg/a"}},
	}, nil)
	if err != nil || !ok || len(resp.Results) != 3 || resp.Results[2].KV == nil || string(resp.Results[2].KV.Value) != "1" ||
		resp.Results[0].KV.Value != nil || resp.Results[1].KV.Flags != 9 {
		t.Fatalf("Txn = %v, %+v, %v", ok, resp, err)
	}
	b, _, _ := client.KV().Get("cfg/b", nil)

	// One operation fails: nothing is applied.
	ok, resp, _, err = txn.Txn(api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "cfg/c", Value: []byte("3")}},
		{KV: &api.KVTxnOp{Verb: api.KVCAS, Key: "cfg/b", Value: []byte("x"), Index: b.ModifyIndex + 1000}},
		{KV: &api.KVTxnOp{Verb: api.KVDelete, Key: "cfg/a"}},
	}, nil)
	if err != nil || ok || len(resp.Errors) != 1 || resp.Errors[0].OpIndex != 1 || !strings.Contains(resp.Errors[0].What, "index is stale") {
		t.Fatalf("failing Txn = %v, %+v, %v; want rolled back with op 1's error", ok, resp, err)
	}
	if c, _, _ := client.KV().Get("cfg/c", nil); c != nil {
		t.Errorf("cfg/c = %+v after a rolled-back txn", c)
	}
	if a, _, _ := client.KV().Get("cfg/a", nil); a == nil {
		t.Error("cfg/a is gone after a rolled-back txn")
	}
	if b2, _, _ := client.KV().Get("cfg/b", nil); b2 == nil || string(b2.Value) != "2" || b2.ModifyIndex != b.ModifyIndex {
		t.Errorf("cfg/b = %+v after a rolled-back txn; want unchanged %+v", b2, b)
	}

	// Locks and session checks in a transaction.
	sess, _, err := client.Session().Create(&api.SessionEntry{Name: "txn"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ok, resp, _, err = txn.Txn(api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVLock, Key: "cfg/leader", Value: []byte("me"), Session: sess}},
		{KV: &api.KVTxnOp{Verb: api.KVCheckSession, Key: "cfg/leader", Session: sess}},
		{KV: &api.KVTxnOp{Verb: api.KVGetOrEmpty, Key: "cfg/none"}},
	}, nil)
	if err != nil || !ok || resp.Results[0].KV.Session != sess || resp.Results[0].KV.LockIndex != 1 || resp.Results[2].KV.Key != "cfg/none" {
		t.Fatalf("lock txn = %v, %+v, %v", ok, resp, err)
	}

	// The status codes and limits, as Consul answers them.
	for _, c := range []struct {
		name, body string
		code       int
		want       string
	}{
		{"conflict", `[{"KV":{"Verb":"check-not-exists","Key":"cfg/a"}}]`, http.StatusConflict, `"OpIndex":0`},
		{"node op", `[{"KV":{"Verb":"get","Key":"cfg/a"}},{"Node":{"Verb":"get","Node":{"Node":"n"}}}]`, http.StatusConflict, `"OpIndex":1,"What":"only KV operations`},
		{"bad verb", `[{"KV":{"Verb":"frob","Key":"x"}}]`, http.StatusConflict, `unknown KV verb \"frob\"`},
		{"unknown field", `[{"KV":{"Verb":"get","Key":"x","Bogus":1}}]`, http.StatusBadRequest, "Bogus"},
		{"too many", "[" + strings.Repeat(`{"KV":{"Verb":"get","Key":"x"}},`, 64) + `{"KV":{"Verb":"get","Key":"x"}}]`, http.StatusRequestEntityTooLarge, "too many operations (65 > 64)"},
		{"ok", `[{"KV":{"Verb":"get","Key":"cfg/a"}}]`, http.StatusOK, `"Errors":null`},
	} {
		code, body := testkit.HTTPDo(t, http.MethodPut, base+"/v1/txn", c.body)
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d %s; want %d with %s", c.name, code, body, c.code, c.want)
		}
	}
}

// TestConsulSessionEndpoints: /v1/session's defaults, reads, renewal and
// its answers to bad input.
func TestConsulSessionEndpoints(t *testing.T) {
	_, client, base := sessionAgent(t)
	sessions := client.Session()
	id, _, err := sessions.Create(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	info, meta, err := sessions.Info(id, nil)
	if err != nil || info == nil || info.Node != "node-a" || info.Behavior != "release" || info.LockDelay != 15*time.Second ||
		!slices.Equal(info.NodeChecks, []string{"serfHealth"}) || info.TTL != "" || info.CreateIndex == 0 || meta.LastIndex < info.CreateIndex {
		t.Fatalf("default session = %+v (index %d), %v", info, meta.LastIndex, err)
	}
	ttlID, _, err := sessions.Create(&api.SessionEntry{Name: "ttl", TTL: "30s", NodeChecks: []string{"vmesh:node"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	list, _, err := sessions.List(nil)
	if err != nil || len(list) != 2 {
		t.Fatalf("List = %+v, %v", list, err)
	}
	onNode, _, err := sessions.Node("node-a", nil)
	if err != nil || len(onNode) != 2 {
		t.Fatalf("Node = %+v, %v", onNode, err)
	}
	renewed, _, err := sessions.Renew(ttlID, nil)
	if err != nil || renewed == nil || renewed.ID != ttlID || renewed.TTL != "30s" {
		t.Fatalf("Renew = %+v, %v", renewed, err)
	}
	// A blocking read of the list wakes on the destroy.
	woke := make(chan int, 1)
	go func() {
		l, _, err := sessions.List(&api.QueryOptions{WaitIndex: meta.LastIndex + 1, WaitTime: time.Minute})
		if err != nil {
			woke <- -1
			return
		}
		woke <- len(l)
	}()
	if _, err := sessions.Destroy(ttlID, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-woke:
		if n != 1 {
			t.Fatalf("blocking List woke with %d sessions; want 1", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("blocking List did not wake on the destroy")
	}
	if renewed, _, err := sessions.Renew(ttlID, nil); err != nil || renewed != nil {
		t.Fatalf("Renew of a destroyed session = %+v, %v; want nil (404)", renewed, err)
	}
	if gone, _, err := sessions.Info(ttlID, nil); err != nil || gone != nil {
		t.Fatalf("Info of a destroyed session = %+v, %v", gone, err)
	}

	// LockDelay as Consul reads it: a duration, or a number that is
	// seconds below 1000 and nanoseconds from there.
	for body, want := range map[string]time.Duration{
		`{"LockDelay":20}`:         20 * time.Second,
		`{"LockDelay":5000000000}`: 5 * time.Second,
		`{"LockDelay":"250ms"}`:    250 * time.Millisecond,
	} {
		got, _, err := sessions.Info(rawSession(t, base, body), nil)
		if err != nil || got == nil || got.LockDelay != want {
			t.Errorf("%s: LockDelay %v, %v; want %s", body, got, err, want)
		}
	}
	for _, c := range []struct{ body, want string }{
		{`{"TTL":"5s"}`, "TTL: 5s is not between 10s and 24h0m0s"},
		{`{"TTL":"soon"}`, `TTL: "soon" is not a duration`},
		{`{"Behavior":"keep"}`, `Behavior: "keep"`},
		{`{"LockDelay":"2m"}`, "LockDelay: 2m0s is not between 0s and 1m0s"},
		{`{"LockDelay":"later"}`, `LockDelay: "later" is not a duration`},
		{`{"Node":"ghost"}`, `Node: node "ghost" is not registered`},
		{`{"NodeChecks":["nope"]}`, `check "nope" is not registered on node "node-a"`},
		{`{"Namespace":"team"}`, `Namespace: "team" is not supported`},
		{`{"Bogus":1}`, "Bogus"},
	} {
		code, body := testkit.HTTPDo(t, http.MethodPut, base+"/v1/session/create", c.body)
		if code != http.StatusBadRequest || !strings.Contains(body, c.want) {
			t.Errorf("create %s: %d %s; want 400 with %q", c.body, code, body, c.want)
		}
	}
	// KV: acquire with an unknown session is a 400; both flags are too.
	for _, q := range []string{"acquire=ghost", "acquire=" + id + "&release=" + id, "acquire="} {
		if code, body := testkit.HTTPDo(t, http.MethodPut, base+"/v1/kv/k?"+q, "v"); code != http.StatusBadRequest {
			t.Errorf("PUT /v1/kv/k?%s: %d %s; want 400", q, code, body)
		}
	}
	// ?cas with ?acquire must match too.
	if ok, _, err := client.KV().Acquire(&api.KVPair{Key: "k", Session: id}, nil); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if code, body := testkit.HTTPDo(t, http.MethodPut, base+"/v1/kv/k?cas=1&acquire="+id, "v"); code != http.StatusOK || strings.TrimSpace(body) != "false" {
		t.Errorf("acquire with a stale cas: %d %s; want false", code, body)
	}
	pair, _, _ := client.KV().Get("k", nil)
	if code, body := testkit.HTTPDo(t, http.MethodPut, fmt.Sprintf("%s/v1/kv/k?cas=%d&release=%s", base, pair.ModifyIndex, id), "v"); code != http.StatusOK || strings.TrimSpace(body) != "true" {
		t.Errorf("release with a matching cas: %d %s; want true", code, body)
	}
}

// TestACLSessionsAndTxn: with ACLs on and deny by default, sessions need
// session:write on their node, a lock key:write, and a transaction each
// operation's rule; a refused operation fails in the 409 by its index
// and nothing applies; get-tree leaves out the keys the token may not
// read.
func TestACLSessionsAndTxn(t *testing.T) {
	a, anon := aclAgent(t)
	boot, _, err := anon.ACL().Bootstrap()
	if err != nil {
		t.Fatal(err)
	}
	root := clientWith(t, a, boot.SecretID)
	testkit.WaitFor(t, 10*time.Second, "the node check passing", func() bool {
		checks, _, err := root.Health().Node("node-a", nil)
		return err == nil && len(checks) > 0 && checks[0].Status == api.HealthPassing
	})
	rules := `session "node-a" { policy = "write" }
key_prefix "locks/" { policy = "write" }
key_prefix "pub/" { policy = "read" }`
	if _, _, err := root.ACL().PolicyCreate(&api.ACLPolicy{Name: "locks", Rules: rules}, nil); err != nil {
		t.Fatal(err)
	}
	tok, _, err := root.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{Name: "locks"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	lk := clientWith(t, a, tok.SecretID)
	for _, k := range []string{"pub/b", "secret/s"} {
		if _, err := root.KV().Put(&api.KVPair{Key: k, Value: []byte(k)}, nil); err != nil {
			t.Fatal(err)
		}
	}

	_, _, err = anon.Session().Create(nil, nil)
	wantDenied(t, "anonymous session create", err)
	_, _, err = lk.Session().Create(&api.SessionEntry{Node: "ghost"}, nil)
	wantDenied(t, "session on a node the token may not write", err)
	id, _, err := lk.Session().Create(&api.SessionEntry{Name: "lk"}, nil)
	if err != nil {
		t.Fatalf("session on node-a: %v", err)
	}
	if ok, _, err := lk.KV().Acquire(&api.KVPair{Key: "locks/x", Session: id}, nil); err != nil || !ok {
		t.Errorf("Acquire locks/x = %v, %v", ok, err)
	}
	_, _, err = lk.KV().Acquire(&api.KVPair{Key: "secret/x", Session: id}, nil)
	wantDenied(t, "Acquire of a key the token may not write", err)

	ok, resp, _, err := lk.Txn().Txn(api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "locks/a", Value: []byte("1")}},
		{KV: &api.KVTxnOp{Verb: api.KVGet, Key: "pub/b"}},
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "pub/c", Value: []byte("1")}},
	}, nil)
	if err != nil || ok || len(resp.Errors) != 1 || resp.Errors[0].OpIndex != 2 || !strings.Contains(resp.Errors[0].What, "Permission denied") {
		t.Fatalf("txn with a write the token may not make = %v, %+v, %v; want op 2 denied", ok, resp, err)
	}
	if got, _, _ := root.KV().Get("locks/a", nil); got != nil {
		t.Errorf("locks/a = %+v after a refused txn", got)
	}
	ok, resp, _, err = lk.Txn().Txn(api.TxnOps{{KV: &api.KVTxnOp{Verb: api.KVGetTree, Key: ""}}}, nil)
	var keys []string
	if resp != nil {
		for _, r := range resp.Results {
			keys = append(keys, r.KV.Key)
		}
	}
	if err != nil || !ok || !slices.Equal(keys, []string{"locks/x", "pub/b"}) {
		t.Errorf("get-tree with the locks token = %v, %v, %v; want locks/x and pub/b only", ok, keys, err)
	}

	// Reads keep the sessions whose node the token may read sessions of.
	if l, _, err := anon.Session().List(nil); err != nil || len(l) != 0 {
		t.Errorf("anonymous List = %+v, %v; want none", l, err)
	}
	if s, _, err := anon.Session().Info(id, nil); err != nil || s != nil {
		t.Errorf("anonymous Info = %+v, %v; want none", s, err)
	}
	if l, _, err := lk.Session().Node("node-a", nil); err != nil || len(l) != 1 || l[0].ID != id {
		t.Errorf("Node with the token = %+v, %v; want its session", l, err)
	}

	_, _, err = anon.Session().Renew(id, nil)
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("anonymous renew: %v; want 403", err)
	}
	if s, _, err := lk.Session().Renew(id, nil); err != nil || s == nil {
		t.Errorf("renew with the token: %+v, %v", s, err)
	}
	_, err = anon.Session().Destroy(id, nil)
	wantDenied(t, "anonymous destroy", err)
	if _, err := lk.Session().Destroy(id, nil); err != nil {
		t.Errorf("destroy with the token: %v", err)
	}
}
