package mesh

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

// TestLogHubTee: the agent's handler keeps its own level; a subscriber
// gets the records at its level and above, with the logger's attributes,
// in its format, and nothing after it cancels.
func TestLogHubTee(t *testing.T) {
	var base bytes.Buffer
	hub := newLogHub()
	logger := slog.New(&teeHandler{base: slog.NewTextHandler(&base, &slog.HandlerOptions{Level: slog.LevelInfo}), hub: hub})
	child := logger.With("component", "raft").WithGroup("g")

	text, cancelText := hub.Subscribe(slog.LevelDebug, false)
	js, cancelJSON := hub.Subscribe(slog.LevelWarn, true)
	child.Debug("quiet", "k", 1)
	child.Warn("loud", "k", 2)

	var got []string
	for range 2 {
		got = append(got, string(<-text))
	}
	// Text lines are Consul's monitor format: TIME [LEVEL]  msg: attrs.
	if !strings.Contains(got[0], " [DEBUG] quiet: ") || !strings.Contains(got[0], "component=raft") || !strings.Contains(got[0], "g.k=1") ||
		strings.Contains(got[0], "msg=") || !strings.Contains(got[1], " [WARN]  loud: ") {
		t.Errorf("text subscriber got %q", got)
	}
	var rec map[string]any
	if err := json.Unmarshal(<-js, &rec); err != nil || rec["msg"] != "loud" || rec["component"] != "raft" {
		t.Errorf("JSON subscriber got %v, %v", rec, err)
	}
	select {
	case extra := <-js:
		t.Errorf("JSON subscriber at warn got a debug record: %q", extra)
	default:
	}
	if strings.Contains(base.String(), "quiet") || !strings.Contains(base.String(), "loud") {
		t.Errorf("agent's own log (info) = %q; want loud only", base.String())
	}
	if cancelText() != 0 || cancelJSON() != 0 {
		t.Error("dropped lines with a reader keeping up")
	}
	plain, cancelPlain := hub.Subscribe(slog.LevelInfo, false)
	logger.Info("bare")
	if l := string(<-plain); !strings.HasSuffix(l, " [INFO]  bare") {
		t.Errorf("a record without attributes = %q; want it to end in \" [INFO]  bare\"", l)
	}
	cancelPlain()
	logger.Warn("after")
	select {
	case l := <-text:
		t.Errorf("cancelled subscriber got %q", l)
	default:
	}
	// A reader that never reads loses lines; the logger never waits.
	_, cancel := hub.Subscribe(slog.LevelInfo, false)
	for range logSubBuffer + 10 {
		logger.Info("flood")
	}
	if n := cancel(); n != 10 {
		t.Errorf("dropped %d lines, want 10", n)
	}
}
