package mesh

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
)

// logHub hands the agent's log records to `GET /v1/agent/monitor`
// subscribers as they are written, each at its own level and format,
// whatever level the agent itself logs at (Consul's monitor does the
// same). A subscriber that does not keep up loses lines rather than
// slowing the agent: its channel is bounded and sends never wait.
type logHub struct {
	mu   sync.Mutex
	subs map[*logSub]struct{}
	// min is the lowest level any subscriber wants, or noSubscriber:
	// read without the lock on every log call the agent's own level
	// would skip, so that no subscriber costs nothing.
	min atomic.Int64
}

const noSubscriber = int64(slog.LevelError) + 1<<20

type logSub struct {
	level   slog.Level
	json    bool
	ch      chan []byte
	dropped int
}

// logSubBuffer is how many lines a slow subscriber may be behind.
const logSubBuffer = 512

func newLogHub() *logHub {
	h := &logHub{subs: map[*logSub]struct{}{}}
	h.min.Store(noSubscriber)
	return h
}

// resetMin recomputes min; call with mu held.
func (h *logHub) resetMin() {
	m := noSubscriber
	for s := range h.subs {
		m = min(m, int64(s.level))
	}
	h.min.Store(m)
}

// Subscribe is httpapi.LogMonitor's: lines at level and above, as JSON
// or text, until cancel.
func (h *logHub) Subscribe(level slog.Level, json bool) (<-chan []byte, func() int) {
	s := &logSub{level: level, json: json, ch: make(chan []byte, logSubBuffer)}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.resetMin()
	h.mu.Unlock()
	return s.ch, func() int {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.subs, s)
		h.resetMin()
		return s.dropped
	}
}

// teeHandler sends each record to the agent's own handler (at its level)
// and to the hub's subscribers (at theirs). ops replays With and
// WithGroup on the formatters made for subscribers.
type teeHandler struct {
	base slog.Handler
	hub  *logHub
	ops  []func(slog.Handler) slog.Handler
}

func (t *teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	if t.base.Enabled(ctx, l) {
		return true
	}
	return int64(l) >= t.hub.min.Load()
}

func (t *teeHandler) Handle(ctx context.Context, r slog.Record) error {
	var err error
	if t.base.Enabled(ctx, r.Level) {
		err = t.base.Handle(ctx, r)
	}
	t.hub.mu.Lock()
	defer t.hub.mu.Unlock()
	if len(t.hub.subs) == 0 {
		return err
	}
	var lines [2][]byte // text, JSON: formatted once each
	for s := range t.hub.subs {
		if r.Level < s.level {
			continue
		}
		i := 0
		if s.json {
			i = 1
		}
		if lines[i] == nil {
			lines[i] = t.format(ctx, r, s.json)
		}
		select {
		case s.ch <- lines[i]:
		default:
			s.dropped++
		}
	}
	return err
}

// format renders one record for a subscriber: slog's JSON, or the text
// line Consul's monitor writes (hclog's "TIME [LEVEL]  msg: k=v"), which
// `consul monitor` users and their tools read.
func (t *teeHandler) format(ctx context.Context, r slog.Record, json bool) []byte {
	var buf bytes.Buffer
	opts := &slog.HandlerOptions{Level: slog.LevelDebug}
	var h slog.Handler
	if json {
		h = slog.NewJSONHandler(&buf, opts)
	} else {
		buf.WriteString(r.Time.UTC().Format("2006-01-02T15:04:05.000Z"))
		buf.WriteString(hclogLevel(r.Level))
		buf.WriteString(r.Message)
		// The attributes, as slog's text handler writes them, after
		// "msg: "; time, level and msg are already in the prefix.
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey || a.Key == slog.MessageKey) {
				return slog.Attr{}
			}
			return a
		}
		h = slog.NewTextHandler(&attrsAfterColon{buf: &buf}, opts)
	}
	for _, op := range t.ops {
		h = op(h)
	}
	_ = h.Handle(ctx, r.Clone()) // writes to a buffer
	return bytes.TrimRight(buf.Bytes(), "\n")
}

// hclogLevel is hclog's level tag with its padding, so that messages
// line up as in Consul's own log.
func hclogLevel(l slog.Level) string {
	switch {
	case l < slog.LevelInfo:
		return " [DEBUG] "
	case l < slog.LevelWarn:
		return " [INFO]  "
	case l < slog.LevelError:
		return " [WARN]  "
	}
	return " [ERROR] "
}

// attrsAfterColon appends slog's text output of a record's attributes to
// buf after ": ", or nothing when there are none.
type attrsAfterColon struct{ buf *bytes.Buffer }

func (w *attrsAfterColon) Write(p []byte) (int, error) {
	if s := bytes.TrimSpace(p); len(s) > 0 {
		w.buf.WriteString(": ")
		w.buf.Write(s)
	}
	return len(p), nil
}

func (t *teeHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &teeHandler{base: t.base.WithAttrs(attrs), hub: t.hub,
		ops: append(t.ops[:len(t.ops):len(t.ops)], func(h slog.Handler) slog.Handler { return h.WithAttrs(attrs) })}
}

func (t *teeHandler) WithGroup(name string) slog.Handler {
	return &teeHandler{base: t.base.WithGroup(name), hub: t.hub,
		ops: append(t.ops[:len(t.ops):len(t.ops)], func(h slog.Handler) slog.Handler { return h.WithGroup(name) })}
}
