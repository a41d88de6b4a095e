package e2e

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
)

// TestDurabilitySIGKILL registers 500 instances, SIGKILLs the agent and
// restarts it on the same data dir: every acknowledged registration must be
// back and the index must not go down — first replayed from the raft log,
// then again after a snapshot has truncated the log.
func TestDurabilitySIGKILL(t *testing.T) {
	skipShort(t)
	t.Parallel()
	dataDir := t.TempDir()
	cfgDir := t.TempDir()
	// Keep few trailing logs so a snapshot really truncates the log, and a
	// high threshold so only our explicit snapshot takes one.
	cfgFile := testkit.WriteFile(t, cfgDir, "vmesh.hcl", `
raft {
  snapshot_threshold = 1000000
  trailing_logs      = 10
  snapshot_interval  = "1h"
}
`)
	args := []string{"agent", "-bootstrap", "-node", "dur-1", "-data-dir", dataDir, "-config", cfgFile,
		"-bind", "127.10.0.1", "-client", "127.10.0.1", "-http-addr", "127.10.0.1:0", "-cluster-port", "0", "-services-dir", ""}
	start := func() *proc {
		p := startProc(t, args...)
		p.waitHTTP(10 * time.Second)
		p.waitLeader(15 * time.Second)
		return p
	}
	count := func(p *proc) (int, uint64) {
		var insts []struct{ ServiceID string }
		idx := testkit.GetJSON(t, p.httpAddr, "/v1/catalog/service/dur", &insts)
		seen := map[string]bool{}
		for _, in := range insts {
			seen[in.ServiceID] = true
		}
		return len(seen), idx
	}
	register := func(p *proc, from, to int) {
		var wg sync.WaitGroup
		errs := make(chan error, to-from)
		ids := make(chan int)
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range ids {
					code, body := testkit.HTTPDo(t, http.MethodPut, "http://"+p.httpAddr+"/v1/agent/service/register",
						fmt.Sprintf(`{"ID":"dur-%d","Name":"dur","Port":%d,"Tags":["t%d"]}`, i, 1000+i, i%7))
					if code != http.StatusOK {
						errs <- fmt.Errorf("register dur-%d: %d %s", i, code, body)
					}
				}
			}()
		}
		for i := from; i < to; i++ {
			ids <- i
		}
		close(ids)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}

	p := start()
	register(p, 0, 500)
	n, idxBefore := count(p)
	if n != 500 {
		t.Fatalf("before kill: %d instances, want 500", n)
	}
	if code := p.stop(syscall.SIGKILL); code != -1 {
		t.Fatalf("SIGKILL exit code %d", code)
	}

	p = start()
	n, idxAfter := count(p)
	if n != 500 || idxAfter < idxBefore {
		t.Fatalf("after restart from the log: %d instances at index %d; want 500 at >= %d", n, idxAfter, idxBefore)
	}

	// Snapshot, check that the log really was truncated, write a few more.
	code, body := testkit.HTTPDo(t, http.MethodPut, "http://"+p.httpAddr+"/v1/vmesh/raft/snapshot", "")
	if code != http.StatusOK {
		t.Fatalf("snapshot: %d %s", code, body)
	}
	var self struct {
		Stats struct{ Raft map[string]string }
	}
	testkit.GetJSON(t, p.httpAddr, "/v1/agent/self", &self)
	first, _ := strconv.ParseUint(self.Stats.Raft["first_log_index"], 10, 64)
	last, _ := strconv.ParseUint(self.Stats.Raft["last_log_index"], 10, 64)
	if first <= 1 || last-first > 20 {
		t.Fatalf("after snapshot the log spans %d..%d; want it truncated to about 10 trailing entries", first, last)
	}
	register(p, 500, 520)
	n, idxBefore = count(p)
	if n != 520 {
		t.Fatalf("before second kill: %d instances, want 520", n)
	}
	p.stop(syscall.SIGKILL)

	p = start()
	n, idxAfter = count(p)
	if n != 520 || idxAfter < idxBefore {
		t.Fatalf("after restart from snapshot+log: %d instances at index %d; want 520 at >= %d", n, idxAfter, idxBefore)
	}
	testkit.GetJSON(t, p.httpAddr, "/v1/agent/self", &self)
	if s := self.Stats.Raft["last_snapshot_index"]; s == "0" || s == "" {
		t.Fatalf("restarted agent has no snapshot (last_snapshot_index=%q)", s)
	}
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM exit code %d, want 0", code)
	}
}
