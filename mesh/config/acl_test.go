package config

import (
	"strings"
	"testing"

	"github.com/vmesh/vmesh/acl"
)

// TestACLConfig: ACLs are on and deny by default outside -dev, off under
// -dev; the acl block turns them off or picks the default; a bad
// default_policy names the key.
func TestACLConfig(t *testing.T) {
	cfg := DefaultConfig()
	if !cfg.ACLEnabled() || cfg.ACLDefaultPolicy() != acl.DefaultDeny {
		t.Errorf("default: enabled %v, default %q; want on and deny", cfg.ACLEnabled(), cfg.ACLDefaultPolicy())
	}
	cfg.Dev = true
	if cfg.ACLEnabled() {
		t.Error("-dev: ACLs on; want off")
	}
	for _, tc := range []struct {
		src     string
		enabled bool
		def     acl.DefaultPolicy
		err     string
	}{
		{src: `acl { enabled = false }`, enabled: false, def: acl.DefaultDeny},
		{src: `acl { default_policy = "allow" }`, enabled: true, def: acl.DefaultAllow},
		{src: `acl { default_policy = "maybe" }`, err: "acl.default_policy"},
		{src: `acl { enabled = "yes" }`, err: "acl.enabled"},
	} {
		c := DefaultConfig()
		c.NodeName, c.DataDir = "n1", t.TempDir()
		err := Decode("acl.hcl", []byte(tc.src), "hcl", &c)
		if err == nil {
			err = c.Validate()
		}
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: %v; want an error naming %s", tc.src, err, tc.err)
			}
			continue
		}
		if err != nil || c.ACLEnabled() != tc.enabled || c.ACLDefaultPolicy() != tc.def {
			t.Errorf("%s: enabled %v, default %q, %v; want %v, %q", tc.src, c.ACLEnabled(), c.ACLDefaultPolicy(), err, tc.enabled, tc.def)
		}
	}
}
