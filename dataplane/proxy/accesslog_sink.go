package proxy

import (
	"io"
	"os"
	"sync"
	"time"
)

// Access log sinks: one per destination (a file's path, stdout, stderr),
// shared by every logger that names it and kept across configuration
// changes. A line is rendered into the sink's pending buffer under a
// mutex and the request goes on; the sink's goroutine writes the buffer
// out every sinkFlushEvery, or as soon as sinkFlushBytes are pending (as
// Envoy's file_flush_interval and buffer do): one write per batch, not
// per request. The buffer is bounded (sinkMaxPending): when the disk is slower
// than the traffic, new lines are dropped and counted, and a warn line
// says how many, at most every sinkWarnEvery — the request path never
// waits for the disk.
//
// Rotation: the writer checks every sinkCheckEvery whether the path still
// names the file it holds open (same device and inode); when logrotate
// moved it away (or it was deleted), the writer reopens the path, so the
// new file gets the next lines without a signal. copytruncate works too:
// the file is opened O_APPEND. A sink idle for sinkIdleClose closes its
// file (a path no longer configured is not held open forever).

const (
	sinkMaxPending = 1 << 20
	sinkFlushBytes = 64 << 10
	sinkFlushEvery = time.Second
	sinkCheckEvery = time.Second
	sinkIdleClose  = time.Minute
	sinkWarnEvery  = 10 * time.Second
	sinkFileMode   = 0o640
)

type logSinks struct {
	mu     sync.Mutex
	m      map[string]*logSink
	closed bool
}

type logSink struct {
	name string
	path string // "" for stdout and stderr
	std  io.Writer

	mu      sync.Mutex
	pending []byte
	dropped int64
	wake    chan struct{}
	done    chan struct{}
	closing bool
}

// get is the sink of an access logger, started on first use.
func (ss *logSinks) get(p *Proxy, l *accessLogSpec) *logSink {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if s := ss.m[l.sink]; s != nil {
		return s
	}
	s := &logSink{name: l.sink, path: l.path, wake: make(chan struct{}, 1), done: make(chan struct{})}
	switch l.sink {
	case "stdout":
		s.std = os.Stdout
	case "stderr":
		s.std = os.Stderr
	}
	if ss.closed {
		// The proxy stopped: a line written while it drains goes nowhere.
		s.closing = true
		close(s.done)
		return s
	}
	if ss.m == nil {
		ss.m = map[string]*logSink{}
	}
	ss.m[l.sink] = s
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		s.run(p)
	}()
	return s
}

// close flushes and stops every sink; lines written later are dropped.
func (ss *logSinks) close() {
	ss.mu.Lock()
	ss.closed = true
	all := make([]*logSink, 0, len(ss.m))
	for _, s := range ss.m {
		all = append(all, s)
	}
	ss.mu.Unlock()
	for _, s := range all {
		s.mu.Lock()
		s.closing = true
		s.mu.Unlock()
		s.signal()
		<-s.done
	}
}

// write renders one line into the pending buffer, or drops it when the
// buffer is full.
func (s *logSink) write(f *logFormat, e *logEntry) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	n := len(s.pending)
	s.pending = f.render(s.pending, e)
	if len(s.pending) > sinkMaxPending {
		s.pending = s.pending[:n]
		s.dropped++
		s.mu.Unlock()
		return
	}
	full := len(s.pending) >= sinkFlushBytes
	s.mu.Unlock()
	if full {
		s.signal()
	}
}

func (s *logSink) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run writes the pending lines until the sink closes.
func (s *logSink) run(p *Proxy) {
	defer close(s.done)
	var (
		f         *os.File
		spare     []byte
		lastWrite = time.Now()
		lastCheck time.Time
		lastWarn  time.Time
		dropped   int64
		failed    int64
		lastErr   error // the last open or write failure, for the warn line
	)
	closeFile := func() {
		if f != nil {
			f.Close()
			f = nil
		}
	}
	defer closeFile()
	tick := time.NewTicker(min(sinkFlushEvery, sinkCheckEvery))
	defer tick.Stop()
	for {
		select {
		case <-s.wake:
		case <-tick.C:
		}
		s.mu.Lock()
		buf := s.pending
		s.pending = spare[:0]
		dropped += s.dropped
		s.dropped = 0
		closing := s.closing
		s.mu.Unlock()
		now := time.Now()
		if s.path != "" && f != nil && now.Sub(lastCheck) >= sinkCheckEvery {
			lastCheck = now
			if rotated(f, s.path) {
				closeFile()
			}
		}
		if len(buf) > 0 {
			lastWrite = now
			w := s.std
			if s.path != "" {
				if f == nil {
					var err error
					if f, err = openLog(p.cfg.AccessLogDir, s.path); err != nil {
						p.log.Debug("opening the access log", "path", s.path, "err", err)
						f, lastErr = nil, err
					}
				}
				if f != nil {
					w = f
				}
			}
			if w == nil {
				failed++
			} else if _, err := w.Write(buf); err != nil {
				failed++
				lastErr = err
				p.log.Debug("writing the access log", "sink", s.name, "err", err)
				closeFile() // reopened with the next lines
			}
		} else if f != nil && now.Sub(lastWrite) >= sinkIdleClose {
			closeFile()
		}
		spare = buf
		if (dropped > 0 || failed > 0) && (now.Sub(lastWarn) >= sinkWarnEvery || closing) {
			lastWarn = now
			args := []any{"sink", s.name, "dropped_buffer_full", dropped, "write_failures", failed}
			if lastErr != nil {
				args = append(args, "err", lastErr)
			}
			p.log.Warn("access log lines lost", args...)
			dropped, failed, lastErr = 0, 0, nil
		}
		if closing {
			s.mu.Lock()
			rest := s.pending
			s.pending = nil
			s.mu.Unlock()
			if len(rest) > 0 {
				if f != nil {
					f.Write(rest)
				} else if s.std != nil {
					s.std.Write(rest)
				}
			}
			return
		}
	}
}

// rotated says whether path no longer names the open file f.
func rotated(f *os.File, path string) bool {
	cur, err := os.Stat(path)
	if err != nil {
		return true // moved away or deleted: a new file is created
	}
	open, err := f.Stat()
	if err != nil {
		return true
	}
	return !os.SameFile(cur, open)
}
