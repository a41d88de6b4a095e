package mesh

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/vmesh/vmesh/lab/testkit"

	"github.com/vmesh/vmesh/mesh/cli"
)

// TestCLIConfig writes, reads, lists and deletes config entries through a
// running agent, raft included.
func TestCLIConfig(t *testing.T) {
	a := startAgent(t, testConfig(t))
	t.Setenv("VMESH_HTTP_ADDR", a.HTTPAddr())
	dir := t.TempDir()
	file := testkit.WriteFile(t, dir, "web.hcl", "kind = \"service-defaults\"\nname = \"web\"\nprotocol = \"http\"\n")
	if code, out, errs := runCLI(t, "config", "write", file); code != 0 || !strings.Contains(out, "Config entry written: service-defaults/web") {
		t.Fatalf("config write = %d\n%s%s", code, out, errs)
	}
	code, out, errs := runCLI(t, "config", "read", "service-defaults", "web")
	if code != 0 || !strings.Contains(out, `"Protocol": "http"`) || !strings.Contains(out, `"ModifyIndex"`) {
		t.Fatalf("config read = %d\n%s%s", code, out, errs)
	}
	var e struct{ ModifyIndex uint64 }
	if err := json.Unmarshal([]byte(out), &e); err != nil {
		t.Fatal(err)
	}
	// A stale --cas is refused; the current one is accepted.
	if code, _, errs := runCLI(t, "config", "write", "--cas", "1", file); code != cli.ExitFailed || !strings.Contains(errs, "not written") {
		t.Fatalf("config write with a stale cas = %d %q", code, errs)
	}
	if code, out, errs := runCLI(t, "config", "write", "--cas", jsonNumber(e.ModifyIndex), file); code != 0 {
		t.Fatalf("config write with the current cas = %d\n%s%s", code, out, errs)
	}
	if code, out, _ := runCLI(t, "config", "list", "service-defaults"); code != 0 || out != "web\n" {
		t.Fatalf("config list = %d %q", code, out)
	}
	if code, out, errs := runCLI(t, "config", "delete", "service-defaults", "web"); code != 0 || !strings.Contains(out, "deleted") {
		t.Fatalf("config delete = %d\n%s%s", code, out, errs)
	}
	if code, _, errs := runCLI(t, "config", "read", "service-defaults", "web"); code != cli.ExitFailed || !strings.Contains(errs, "404") {
		t.Fatalf("config read after delete = %d %q; want a 404", code, errs)
	}
	bad := testkit.WriteFile(t, dir, "bad.hcl", "kind = \"service-defaults\"\nname = \"web\"\nprotocol = \"smtp\"\n")
	if code, _, errs := runCLI(t, "config", "write", bad); code != cli.ExitUsage || !strings.Contains(errs, "bad.hcl") || !strings.Contains(errs, "Protocol") {
		t.Fatalf("config write of a bad file = %d %q", code, errs)
	}
	if code, _, errs := runCLI(t, "config", "frob"); code != cli.ExitUsage || !strings.Contains(errs, "usage: vmesh config write") {
		t.Fatalf("config frob = %d %q", code, errs)
	}
}

func jsonNumber(v uint64) string {
	b, _ := json.Marshal(v)
	return string(b)
}
