package e2e

import (
	"os/exec"
	"strings"
	"testing"
)

// TestBlackBox: these tests reach vmesh through the binary and leaf
// packages only; importing mesh (or a package under it) would tie them to
// internals that may change under them.
func TestBlackBox(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-deps", "-test", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if (pkg == "github.com/vmesh/vmesh/mesh" || strings.HasPrefix(pkg, "github.com/vmesh/vmesh/mesh/")) &&
			!strings.HasPrefix(pkg, "github.com/vmesh/vmesh/mesh/e2e") {
			t.Errorf("mesh/e2e depends on %s; drive the agent through its binary and HTTP API instead", pkg)
		}
	}
}
