package proxy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The access log directory. A file access logger's path comes from the
// mesh's configuration (proxy-defaults, written by anyone holding
// mesh:write), and the proxy may run as root: left alone, that would let
// the cluster make every host create or append to any file. So the host
// decides where its proxy may write (Config.AccessLogDir, the agent's
// telemetry.access_log_dir), and the proxy holds the path to it twice:
//
//   - when a listener is accepted, a file logger whose path, cleaned, is
//     not inside the directory is turned off (refused) with a warn line
//     naming the listener's field, the path and the directory. The
//     listener itself is accepted: NACKing it would also hold back the
//     routes, clusters and RBAC rules that came with it, and a mesh
//     whose access logs point at the wrong place must still apply a new
//     deny intention.
//   - when the file is opened, it is opened beneath the directory
//     (openat2 with RESOLVE_BENEATH and O_NOFOLLOW): neither a symbolic
//     link among its parents nor "..", nor a symbolic link as the file
//     itself, leads out, and no check-then-open race is left. A relative
//     link that stays inside is followed; an absolute one is refused. Without
//     openat2 (Linux before 5.6, other systems), the parent is resolved
//     with filepath.EvalSymlinks and checked, then the file is opened
//     with O_NOFOLLOW.
//
// The file is created 0640, and must be a regular file.

// logDirWarnEvery bounds how often one refused path is warned about: every
// listener of a node carries the same proxy-defaults, and each update
// re-parses them.
const logDirWarnEvery = time.Minute

// confineLogs turns off the file access loggers of s (just parsed) whose
// path is outside the access log directory (p.mu held).
func (p *Proxy) confineLogs(s *listenerSpec) {
	check := func(logs []*accessLogSpec) {
		for _, l := range logs {
			if l.path == "" {
				continue
			}
			if _, err := logPathIn(p.cfg.AccessLogDir, l.path); err != nil {
				l.refused = true
				p.warnLogRefused(s.name, l, err)
			}
		}
	}
	check(s.logs)
	chains := append([]*chainSpec{s.def}, s.chains...)
	for _, c := range chains {
		if c == nil {
			continue
		}
		if c.proxy != nil {
			check(c.proxy.logs)
		}
		if c.http != nil {
			check(c.http.logs)
		}
	}
}

func (p *Proxy) warnLogRefused(listener string, l *accessLogSpec, err error) {
	now := time.Now()
	if last, ok := p.logDirWarned[l.path]; ok && now.Sub(last) < logDirWarnEvery {
		return
	}
	if p.logDirWarned == nil {
		p.logDirWarned = map[string]time.Time{}
	}
	for path, last := range p.logDirWarned {
		if now.Sub(last) >= logDirWarnEvery {
			delete(p.logDirWarned, path) // bounded by the paths of the last minute
		}
	}
	p.logDirWarned[l.path] = now
	p.log.Warn("access log refused: the listener is served without this logger",
		"listener", listener, "field", l.field, "path", l.path, "access_log_dir", p.cfg.AccessLogDir, "err", err)
}

// logPathIn is path relative to dir, when path, cleaned, is a file inside
// dir; otherwise an error naming both.
func logPathIn(dir, path string) (string, error) {
	if dir == "" {
		return "", fmt.Errorf("%q: this host sets no access log directory, so it writes no file access log", path)
	}
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("%q is not an absolute path", path)
	}
	d, c := filepath.Clean(dir), filepath.Clean(path)
	rel, err := filepath.Rel(d, c)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("%q is not inside this host's access log directory %s", path, d)
	}
	return rel, nil
}

// openLog opens the access log path for appending, creating it 0640,
// beneath dir (which it creates 0750 when missing). The file must be a
// regular one.
func openLog(dir, path string) (*os.File, error) { return openLogWith(openBeneath, dir, path) }

// openLogWith is openLog opening the file with open (the tests try both
// ways).
func openLogWith(open func(dir, rel string) (*os.File, error), dir, path string) (*os.File, error) {
	rel, err := logPathIn(dir, path)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("access log directory: %w", err)
	}
	f, err := open(filepath.Clean(dir), rel)
	if err != nil {
		return nil, fmt.Errorf("access log %s: %w", path, err)
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = errors.New("not a regular file")
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("access log %s: %w", path, err)
	}
	return f, nil
}

// logOpenFlags: O_NONBLOCK so that a FIFO put in the directory fails the
// open rather than blocking the sink.
const logOpenFlags = os.O_WRONLY | os.O_APPEND | os.O_CREATE | syscall.O_NOFOLLOW | syscall.O_CLOEXEC | syscall.O_NONBLOCK

// openChecked is openBeneath without openat2: the parent directory is
// resolved and must be inside dir (resolved too), then the file is opened
// without following a final symbolic link. A parent swapped for a link
// between the check and the open is not caught.
func openChecked(dir, rel string) (*os.File, error) {
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, err
	}
	full := filepath.Join(dir, rel)
	parent, err := filepath.EvalSymlinks(filepath.Dir(full))
	if err != nil {
		return nil, err
	}
	if parent != realDir && !strings.HasPrefix(parent, realDir+string(filepath.Separator)) {
		return nil, fmt.Errorf("its directory resolves to %s, which leads out of the access log directory %s", parent, realDir)
	}
	return os.OpenFile(filepath.Join(parent, filepath.Base(full)), logOpenFlags, sinkFileMode)
}
