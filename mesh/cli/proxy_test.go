package cli

import (
	"strings"
	"testing"
)

// vmesh proxy --access-log-dir takes an absolute directory other than /;
// anything else is a usage error naming the flag, before any connection.
func TestProxyAccessLogDirFlag(t *testing.T) {
	t.Parallel()
	for _, dir := range []string{"logs", "/", ""} {
		code, _, errs := runCLI(t, "proxy", "--xds", "127.0.0.1:1", "--node", "n1", "--access-log-dir", dir)
		if code != ExitUsage || !strings.Contains(errs, "--access-log-dir") {
			t.Errorf("--access-log-dir %q = %d, stderr %q; want exit 2 naming the flag", dir, code, errs)
		}
	}
	code, out, _ := runCLI(t, "proxy", "-h")
	if code != ExitOK || !strings.Contains(out, "-access-log-dir") || !strings.Contains(out, "/var/log/vmesh") {
		t.Errorf("proxy -h = %d, lacks -access-log-dir and its default:\n%s", code, out)
	}
}
