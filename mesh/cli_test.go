package mesh

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/vmesh/vmesh/lab/testkit"

	"github.com/vmesh/vmesh/mesh/cli"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), append([]string{"vmesh"}, args...), &cli.Env{Stdout: &out, Stderr: &errb})
	return code, out.String(), errb.String()
}

func TestCLIServices(t *testing.T) {
	a := startAgent(t, testConfig(t))
	addr := a.HTTPAddr()
	dir := t.TempDir()
	file := testkit.WriteFile(t, dir, "svc.hcl", `
services = [
  { name = "orders", id = "orders-1", port = 9000, tags = ["v1"], check = { ttl = "10s" } },
  { name = "users", port = 9001 },
]
`)
	if code, out, errs := runCLI(t, "services", "register", "--http-addr", addr, file); code != 0 ||
		!strings.Contains(out, "Registered service: orders-1") || !strings.Contains(out, "Registered service: users") {
		t.Fatalf("services register = %d\n%s%s", code, out, errs)
	}
	t.Setenv("VMESH_HTTP_ADDR", addr)
	code, out, errs := runCLI(t, "services", "list")
	if code != 0 || !strings.Contains(out, "orders-1") || !strings.Contains(out, "9001") {
		t.Fatalf("services list = %d\n%s%s", code, out, errs)
	}
	if code, out, errs := runCLI(t, "services", "deregister", "orders-1"); code != 0 || !strings.Contains(out, "Deregistered") {
		t.Fatalf("services deregister = %d\n%s%s", code, out, errs)
	}
	if _, out, _ := runCLI(t, "services", "list"); strings.Contains(out, "orders-1") {
		t.Fatalf("orders-1 still listed after deregister:\n%s", out)
	}
	if code, _, errs := runCLI(t, "services", "deregister", "orders-1"); code != cli.ExitFailed || !strings.Contains(errs, "404") {
		t.Fatalf("deregister of an unknown ID = %d %s; want a failure naming 404", code, errs)
	}

	// A bad file registers nothing and names the file and line.
	bad := testkit.WriteFile(t, dir, "bad.hcl", "service {\n  name = \"ok\"\n  port = 1\n}\nservices = [\n  { name = \"\", port = 2 }\n]\n")
	code, _, errs = runCLI(t, "services", "register", bad)
	if code != cli.ExitUsage || !strings.Contains(errs, "bad.hcl:6") || !strings.Contains(errs, "missing service name") {
		t.Fatalf("register bad file = %d %q; want exit 2 naming bad.hcl:6", code, errs)
	}
	if _, out, _ := runCLI(t, "services", "list"); strings.Contains(out, "ok ") {
		t.Fatalf("a service from a bad file was registered:\n%s", out)
	}

	code, out, _ = runCLI(t, "members")
	if code != 0 || !strings.Contains(out, "node-a") || !strings.Contains(out, "alive") {
		t.Fatalf("members = %d\n%s", code, out)
	}
	if code, out, _ := runCLI(t, "version"); code != 0 || !strings.HasPrefix(out, "vmesh ") {
		t.Fatalf("version = %d %q", code, out)
	}
	if code, _, errs := runCLI(t, "frobnicate"); code != cli.ExitUsage || !strings.Contains(errs, "frobnicate") {
		t.Fatalf("unknown command = %d %q", code, errs)
	}
}

func TestCLIUnreachableAgent(t *testing.T) {
	code, _, errs := runCLI(t, "services", "list", "-http-addr", "127.0.0.1:1")
	if code != cli.ExitFailed || !strings.Contains(errs, "VMESH_HTTP_ADDR") {
		t.Fatalf("unreachable agent = %d %q; want a failure that says how to point at the agent", code, errs)
	}
}
