package raft

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestHCLogAdapterFormatsFmtArgs(t *testing.T) {
	var buf strings.Builder
	l := newHCLog(slog.New(slog.NewTextHandler(&buf, nil))).Named("raft").With("k", "v")
	l.Info("snapshot restore progress", "percent-complete", hclog.Fmt("%0.2f%%", 12.345), "id", hclog.Hex(255))
	got := buf.String()
	for _, want := range []string{"percent-complete=12.35%", "id=0xff", "logger=raft", "k=v"} {
		if !strings.Contains(got, want) {
			t.Errorf("logged %q, want it to contain %q", got, want)
		}
	}
	buf.Reset()
	l.Debug("hidden")
	if buf.Len() != 0 {
		t.Errorf("a debug line passed an info-level handler: %q", buf.String())
	}
}
