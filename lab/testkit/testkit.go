package testkit

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// WaitFor polls cond every few milliseconds until it holds; after d it
// fails the test naming what it waited for.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Eventually polls cond like WaitFor but reports instead of failing, for
// callers that want to say more than "timed out".
func Eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// FreePort returns a TCP port that is free right now on every one of ips
// (default 127.0.0.1). Another process may still take it before the caller
// binds it; tests that can listen on port 0 should.
func FreePort(t testing.TB, ips ...string) int {
	t.Helper()
	if len(ips) == 0 {
		ips = []string{"127.0.0.1"}
	}
	for range 50 {
		ln, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
		if err != nil {
			t.Fatalf("finding a free port on %s: %v", ips[0], err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		ok := true
		for _, ip := range ips[1:] {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return port
		}
	}
	t.Fatalf("no port free on all of %v", ips)
	return 0
}

// logWriter sends log lines to t.Log until the test ends; loops that log
// after that (raft, gRPC) are dropped instead of panicking.
type logWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// Writer is an io.Writer that sends each write to t.Log until the test
// ends (for a process's output or a logger built elsewhere).
func Writer(t testing.TB) io.Writer {
	w := &logWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return w
}

// Logger is a text logger at level (default info) that writes to t.Log.
func Logger(t testing.TB, level ...slog.Level) *slog.Logger {
	lvl := slog.LevelInfo
	if len(level) > 0 {
		lvl = level[0]
	}
	return slog.New(slog.NewTextHandler(Writer(t), &slog.HandlerOptions{Level: lvl}))
}

// Discard is a logger that drops everything, for benchmarks and tests that
// log too much to read.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// SyncBuffer is a bytes.Buffer safe for a writer goroutine (a process's
// output, a logger) and a test reading it.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
