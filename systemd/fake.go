package systemd

import (
	"strings"
	"sync"
)

// Recorder is a fake Notifier: it records each notification as one line of
// text ("READY=1 STATUS=leader ...") so a test can compare them.
type Recorder struct {
	mu    sync.Mutex
	lines []string
	// Err, when set, is returned by every call (which is still recorded).
	Err error
}

var _ Notifier = (*Recorder)(nil)

func (r *Recorder) add(parts ...string) error {
	var kept []string
	for _, p := range parts {
		if p != "" {
			kept = append(kept, p)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, strings.Join(kept, " "))
	return r.Err
}

func (r *Recorder) Ready(status string) error  { return r.add("READY=1", statusLine(status)) }
func (r *Recorder) Reloading() error           { return r.add("RELOADING=1") }
func (r *Recorder) Stopping() error            { return r.add("STOPPING=1") }
func (r *Recorder) Status(status string) error { return r.add(statusLine(status)) }
func (r *Recorder) Watchdog() error            { return r.add("WATCHDOG=1") }

// Lines returns the notifications so far, oldest first.
func (r *Recorder) Lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lines...)
}

// Count returns how many notifications start with prefix.
func (r *Recorder) Count(prefix string) int {
	n := 0
	for _, l := range r.Lines() {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}
