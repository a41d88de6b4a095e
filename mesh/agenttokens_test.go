package mesh

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestAgentTokensPersistence: tokens set through the API win over the
// config's; with persistence they are in the data dir (0600) and read
// back, without it nothing is written.
func TestAgentTokensPersistence(t *testing.T) {
	dir := t.TempDir()
	tok, err := loadAgentTokens(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.get(tokenAgent, "from-config"); got != "from-config" {
		t.Errorf("before any set: %q, want the config's", got)
	}
	if err := tok.SetToken(context.Background(), tokenAgent, "from-api"); err != nil {
		t.Fatal(err)
	}
	if got := tok.get(tokenAgent, "from-config"); got != "from-api" {
		t.Errorf("after a set: %q, want the API's", got)
	}
	fi, err := os.Stat(filepath.Join(dir, tokenFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("persisted file: %v, %v; want mode 0600", fi, err)
	}
	again, err := loadAgentTokens(dir, true)
	if err != nil || again.get(tokenAgent, "") != "from-api" {
		t.Errorf("after a restart: %q, %v; want the persisted token", again.get(tokenAgent, ""), err)
	}

	off := t.TempDir()
	mem, err := loadAgentTokens(off, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := mem.SetToken(context.Background(), tokenDefault, "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(off, tokenFile)); !os.IsNotExist(err) {
		t.Errorf("without persistence a file was written: %v", err)
	}

	if err := os.WriteFile(filepath.Join(dir, tokenFile), []byte("not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadAgentTokens(dir, true); err == nil {
		t.Error("a corrupt token file was accepted")
	}
}
